"""README "Connect your EMQX": the starter configuration loads with the exporter's own loader,
and each generation's example `check` prints what README shows.

Each example's command runs as written (README's `--emqx-url` swapped for a simulator of that
generation, 3 nodes and 2000 clients, frozen so the counts are the same on every run) with the
starter configuration. Poll durations differ between runs and are compared as `N.NN s`.
After an intended change of `check`'s output, `pytest tests/test_connect.py --update-golden`
rewrites README's expected outputs from a real run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from emqx_simulator import SimSettings
from emqx_simulator.settings import ApiGeneration
from exporter.config import load_settings
from tests.test_cli import ROOT, threaded_sim

README = ROOT / "README.md"
STARTER = ROOT / "examples" / "config.yml"
API_OF_MAJOR: dict[str, ApiGeneration] = {"3": "v3", "4": "v4", "5": "v5"}

_EXAMPLE = re.compile(r"\n### EMQX (?P<major>\d)\.x[^\n]*\n.*?```sh\n(?P<sh>.*?)```\n\n"
                      r"```text\n(?P<out>.*?)```", re.S)


@dataclass(frozen=True)
class Example:
    api: ApiGeneration
    argv: list[str]  # after `emqx-client-exporter`
    url: str  # the --emqx-url README shows
    expected: str
    start: int  # where `expected` sits in README
    end: int


def connect_examples(text: str) -> list[Example]:
    begin = text.index("\n## Connect your EMQX\n")
    end = text.index("\n## ", begin + 1)
    examples = []
    for match in _EXAMPLE.finditer(text, begin, end):
        (line,) = (line for line in match["sh"].splitlines()
                   if line.startswith("emqx-client-exporter check "))
        argv = shlex.split(line)[1:]
        examples.append(Example(API_OF_MAJOR[match["major"]], argv,
                                argv[argv.index("--emqx-url") + 1], match["out"],
                                match.start("out"), match.end("out")))
    return examples


def run_check(example: Example) -> str:
    """README's command against a simulator of the example's generation; output with the
    simulator's URL replaced by README's."""
    sim = SimSettings(api=example.api, nodes=3, clients=2000, frozen=True, class_prefixes=True)
    with threaded_sim(sim) as (_, url):
        argv = [url if arg == example.url else arg for arg in example.argv]
        env = {**os.environ, "EMQX_API_KEY": sim.api_key, "EMQX_API_SECRET": sim.api_secret}
        result = subprocess.run([sys.executable, "-m", "exporter", *argv], cwd=ROOT, env=env,
                                capture_output=True, timeout=120, check=False)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    return result.stdout.decode().replace(url, example.url)


def durations_hidden(text: str) -> str:
    return re.sub(r"\b\d+\.\d\d s\b", "N.NN s", text)


def test_readme_check_examples_are_real_output(update_golden: bool) -> None:
    text = README.read_text()
    examples = connect_examples(text)
    assert [e.api for e in examples] == ["v5", "v4", "v3"]
    for example in examples:
        assert example.argv[:3] == ["check", "--config", "examples/config.yml"]
    outputs = [run_check(example) for example in examples]
    if update_golden:  # only stale examples, so durations do not churn
        for example, output in sorted(zip(examples, outputs, strict=True),
                                      key=lambda pair: -pair[0].start):
            if durations_hidden(example.expected) != durations_hidden(output):
                text = text[:example.start] + output + text[example.end:]
        README.write_text(text)
        return
    for example, output in zip(examples, outputs, strict=True):
        assert durations_hidden(example.expected) == durations_hidden(output), (
            f"README's {example.api} check example is stale (pytest --update-golden):\n{output}")


def test_starter_config_loads_with_the_exporters_loader() -> None:
    environ = {"EMQX_API_KEY": "exporter", "EMQX_API_SECRET": "from-the-environment"}
    settings = load_settings({}, environ, str(STARTER))
    (cluster,) = settings.clusters
    assert cluster.url == "http://127.0.0.1:18083"
    assert (cluster.api, cluster.interval, cluster.timeout) == ("auto", 30.0, 10.0)
    assert cluster.api_secret == "from-the-environment"  # the file holds no credential
    assert (settings.listen_host, settings.listen_port) == ("0.0.0.0", 9877)
    selection = settings.per_client.selection
    assert dict(selection.top_k) == {"mqueue_fill": 20, "drop_rate": 20, "byte_rate": 10}
    assert selection.max_series == 20000
    assert [(rule.name, rule.field) for rule in settings.classes] == [
        ("sensors", "clientid"), ("gateways", "clientid")]
    assert settings.classes[0].pattern.fullmatch("sensor-0000042")  # whole-id patterns
    assert settings.aggregate.labels == ("node", "class")


def test_starter_config_holds_no_credential() -> None:
    keys = re.findall(r"^\s*(\w+):", STARTER.read_text(), re.MULTILINE)
    assert not {"api_key", "api_secret", "password", "username"} & set(keys)
    assert Path("examples/config.yml") == STARTER.relative_to(ROOT)
