"""Documentation tables generated from the code's own tables, so the docs cannot drift.

`python -m exporter.docs README.md docs/*.md` (the same with no argument) rewrites, in each
Markdown file, the blocks between `<!-- generated:NAME -->` and `<!-- end:NAME -->`; a test fails
when a committed file differs from what this produces.
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


#: A block's markers stand on lines of their own (a marker quoted in the prose is no block).
_OPENING = re.compile(r"^<!-- generated:([\w-]+) -->$", re.M)
_BLOCK = re.compile(r"^<!-- generated:([\w-]+) -->\n(?:.*?\n)?<!-- end:\1 -->$", re.S | re.M)


def block_names(text: str) -> list[str]:
    """The names of the generated blocks a Markdown text holds, in order."""
    return _OPENING.findall(text)


def render(text: str) -> str:
    """The Markdown text with every generated block it holds brought up to date."""
    def build(match: re.Match[str]) -> str:
        name = match[1]
        if name not in BLOCKS:
            raise ValueError(f"generated:{name}: no such table (known: {', '.join(BLOCKS)})")
        return f"<!-- generated:{name} -->\n{BLOCKS[name]()}\n<!-- end:{name} -->"

    rendered, count = _BLOCK.subn(build, text)
    opened = block_names(text)
    if count != len(opened):
        closed = {m[1] for m in _BLOCK.finditer(text)}
        unclosed = [n for n in opened if n not in closed] or opened
        raise ValueError(f"{len(opened) - count} of the blocks generated:{', '.join(unclosed)} "
                         "lack a matching <!-- end:NAME -->")
    return rendered


def markdown_files(root: Path) -> list[Path]:
    """The files that may hold generated blocks: README.md and docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or markdown_files(Path.cwd())
    for path in paths:
        text = path.read_text()
        rendered = render(text)
        if rendered != text:
            path.write_text(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
