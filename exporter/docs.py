"""README tables generated from the code's own tables, so the docs cannot drift.

`python -m exporter.docs README.md` rewrites the blocks between `<!-- generated:NAME -->` and
`<!-- end:NAME -->`; a test fails when the committed README differs from what this produces.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from emqx_simulator.matrix import readme_table as fault_matrix_table
from exporter import contract, schema
from exporter.errors import REASONS


def flags_table() -> str:
    rows = ["| flag | config key | environment | meaning |", "|---|---|---|---|",
            "| `--config FILE` | | | YAML configuration file |"]
    for s in schema.FLAGS:
        envs = ", ".join(f"`{v}`" for v in schema.variables(s))
        rows.append(f"| `{s.flag}` | `{s.key}` | {envs} | {schema.meaning(s)} |")
    return "\n".join(rows)


def config_keys_table() -> str:
    rows = ["| key | default | meaning | flag / environment |", "|---|---|---|---|"]
    for s in schema.SETTINGS:
        default = schema.describe_default(s)
        ways = ", ".join(f"`{w}`" for w in (s.flag, s.env) if w)
        rows.append(f"| `{s.key}` | {f'`{default}`' if default else ''} | "
                    f"{schema.meaning(s, with_default=False)} | {ways} |")
    return "\n".join(rows)


def parts_table() -> str:
    rows = ["| part | default | families |", "|---|---|---|"]
    for part in contract.PARTS:
        families = ", ".join(f"`{f.name}`" for f in part.families) or f"({part.help})"
        rows.append(f"| `{part.name}` | {'on' if part.default else 'off'} | {families} |")
    return "\n".join(rows)


def _family_rows(families: tuple[contract.Family, ...]) -> list[str]:
    rows = ["| metric | type | meaning |", "|---|---|---|"]
    for f in families:
        meaning = f.help.split(" Polled in the background")[0]
        rows.append(f"| `{f.name}` | {f.type} | {meaning} |")
    return rows


def client_metrics_table() -> str:
    return "\n".join(_family_rows(contract.CLIENT_FAMILIES))


def aggregate_metrics_table() -> str:
    return "\n".join(_family_rows(contract.AGGREGATE_FAMILIES))


def event_metrics_table() -> str:
    # Each HELP ends in the same caveat (at most once, a lower bound), said once above the table.
    rows = [row.split(" From EMQX's client events")[0] + (" |" if "From EMQX's" in row else "")
            for row in _family_rows(contract.EVENT_FAMILIES + contract.EVENTS_SELF_FAMILIES)]
    rows.append("")
    rows.append("Disconnect reasons kept as EMQX names them (the rest: `other`): "
                + ", ".join(f"`{r}`" for r in contract.DISCONNECT_REASONS) + ".")
    return "\n".join(rows)


def error_reasons_table() -> str:
    rows = ["| reason | meaning |", "|---|---|"]
    rows += [f"| `{name}` | {meaning} |" for name, meaning in REASONS.items()]
    return "\n".join(rows)


def distributions_table() -> str:
    rows = ["| metric (`gaugehistogram`) | upper bounds `le` (then `+Inf`) | spacing | meaning |",
            "|---|---|---|---|"]
    for d in contract.DISTRIBUTIONS:
        bounds = ", ".join(f"{b:g}" for b in d.bounds)
        rows.append(f"| `{d.name}` | {bounds} | {d.layout} | {d.help} |")
    return "\n".join(rows)


BLOCKS = {
    "flags": flags_table,
    "config-keys": config_keys_table,
    "parts": parts_table,
    "client-metrics": client_metrics_table,
    "aggregate-metrics": aggregate_metrics_table,
    "error-reasons": error_reasons_table,
    "fault-matrix": fault_matrix_table,
    "distributions": distributions_table,
    "event-metrics": event_metrics_table,
}


def render_readme(text: str) -> str:
    """The README with every generated block brought up to date."""
    for name, build in BLOCKS.items():
        pattern = re.compile(rf"(<!-- generated:{name} -->\n)(?:.*?\n)?(<!-- end:{name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"README has no generated:{name} block")
        text = pattern.sub(lambda m, b=build: m[1] + b() + "\n" + m[2], text)  # type: ignore[misc]
    return text


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else "README.md")
    path.write_text(render_readme(path.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
