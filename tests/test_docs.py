"""The README and docs/: generated tables current, links that lead somewhere, YAML that loads.

Every Markdown file that may hold generated tables (README.md and docs/*.md) is rendered by
`exporter.docs` and must be unchanged; every relative link of them names an existing file and,
with `#anchor`, a heading of that file (GitHub's anchors); every ```yaml block parses, and every
block that is an exporter configuration, or a fragment of one, loads with the exporter's loader.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import load_settings
from exporter.docs import BLOCKS, block_names, markdown_files, render
from tests.test_deploy import OTHER_FORMATS, with_placeholder_files, yaml_blocks

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
MARKDOWN = markdown_files(ROOT)
#: What a configuration fragment (a `per_client:` section, an `events:` section) is merged into.
MINIMAL_CONFIG = {"emqx_url": "http://127.0.0.1:18083", "api_key": "exporter",
                  "api_secret": "secret"}


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --------------------------------------------------------------------------------------------
# generated tables


@pytest.mark.parametrize("path", MARKDOWN, ids=rel)
def test_generated_tables_are_current(path: Path) -> None:
    text = path.read_text()
    assert render(text) == text, "run: python -m exporter.docs README.md docs/*.md"


def test_every_generated_table_is_somewhere() -> None:
    shown = {name for path in MARKDOWN for name in block_names(path.read_text())}
    assert shown == set(BLOCKS)


def test_readme_keeps_only_the_flags_table() -> None:
    """The README is for users: the main flags; the full tables live in docs/."""
    assert block_names(README.read_text()) == ["flags"]
    configuration = (ROOT / "docs" / "configuration.md").read_text()
    assert "config-keys" in block_names(configuration)


def test_render_refuses_an_unknown_or_unclosed_block() -> None:
    with pytest.raises(ValueError, match="no such table"):
        render("<!-- generated:nope -->\n<!-- end:nope -->\n")
    with pytest.raises(ValueError, match="end:NAME"):
        render("<!-- generated:flags -->\n| old |\n")
    quoted = "Blocks sit between `<!-- generated:NAME -->` and `<!-- end:NAME -->`.\n"
    assert render(quoted) == quoted  # markers quoted in prose are no block


def test_readme_gives_the_two_quick_start_commands() -> None:
    text = README.read_text()
    assert "make demo" in text and "make test" in text


def test_readme_stays_a_readme() -> None:
    """Why, quick start, connect, main flags, families in brief, links: depth goes to docs/."""
    assert len(README.read_text().splitlines()) <= 450


# --------------------------------------------------------------------------------------------
# links and anchors


def without_fences(text: str) -> str:
    """The text without fenced code blocks (a `# comment` in a shell block is no heading)."""
    return re.sub(r"^```.*?^```[^\n]*$", "", text, flags=re.S | re.M)


def prose(text: str) -> str:
    """The text without code blocks and inline code spans (links there are not links)."""
    return re.sub(r"`[^`\n]*`", "", without_fences(text))


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a heading: markup dropped, lowercase, punctuation other than `-` and
    `_` removed, each space a `-`."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts as its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor GitHub makes for the headings of a Markdown text (repeats get -1, -2 ...)."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", without_fences(text), re.M):
        slug = github_anchor(heading)
        found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return found


def links(text: str) -> Iterator[str]:
    """The targets of the inline, image and reference links of a Markdown text."""
    body = prose(text)
    yield from re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", body)
    yield from re.findall(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", body, re.M)


def broken_links(path: Path, root: Path) -> list[str]:
    """The relative links of a Markdown file that lead nowhere, each with why."""
    broken = []
    for target in links(path.read_text(encoding="utf-8")):
        if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.is_relative_to(root.resolve()) or not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix != ".md":
            broken.append(f"{target}: an anchor into a file that is not Markdown")
        elif anchor and anchor not in anchors(linked.read_text(encoding="utf-8")):
            broken.append(f"{target}: no heading with that anchor in {linked.name}")
    return broken


@pytest.mark.parametrize("path", MARKDOWN, ids=rel)
def test_every_relative_link_leads_somewhere(path: Path) -> None:
    assert not broken_links(path, ROOT)


def test_readme_links_every_document() -> None:
    """Every document of docs/ is reachable from the README."""
    targets = set(links(README.read_text()))
    for path in MARKDOWN[1:]:
        assert f"docs/{path.name}" in targets, f"README does not link {path.name}"


def test_github_anchors() -> None:
    assert github_anchor("EMQX 5.x and 6.x: API key on port 18083") == (
        "emqx-5x-and-6x-api-key-on-port-18083")
    assert github_anchor("`top`: the worst clients in a terminal") == (
        "top-the-worst-clients-in-a-terminal")
    assert github_anchor("TLS, client certificates and basic auth: the web config") == (
        "tls-client-certificates-and-basic-auth-the-web-config")
    assert github_anchor("per_client and top-K") == "per_client-and-top-k"
    assert github_anchor("EMQXClientExporterDown") == "emqxclientexporterdown"
    assert anchors("# A\n## A\n```sh\n# not a heading\n```\n## A\n") == {"a", "a-1", "a-2"}


def test_broken_links_are_found(tmp_path: Path) -> None:
    """The link check fails on a missing file, a missing heading and a link out of the tree."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## A section\n")
    page = tmp_path / "README.md"
    page.write_text(
        "# Title\n\n## Here\n\n"
        "[fine](docs/other.md#a-section), [fine](#here), [web](https://example.com/x#y),\n"
        "`[code](nowhere.md)`, [gone](docs/gone.md), [no heading](docs/other.md#b-section),\n"
        "[no heading here](#there), [outside](../outside.md)\n\n"
        "```sh\n[not a link](nowhere.md)\n```\n")
    assert broken_links(page, tmp_path) == [
        "docs/gone.md: no such file",
        "docs/other.md#b-section: no heading with that anchor in other.md",
        "#there: no heading with that anchor in README.md",
        "../outside.md: no such file",
    ]


# --------------------------------------------------------------------------------------------
# YAML samples


def yaml_samples() -> list[tuple[str, str]]:
    return [(f"{rel(path)}:{line}", text) for path in MARKDOWN for line, text in yaml_blocks(path)]


def as_config(data: dict[str, Any]) -> dict[str, Any]:
    """A configuration sample, or a fragment of one, merged into a minimal configuration; the
    sample's own keys win, and its own credential replaces the minimal one."""
    merged = {**MINIMAL_CONFIG, **data}
    if "api_secret_file" in data and "api_secret" not in data:
        merged.pop("api_secret")
    if "username" in data and "api_key" not in data:
        merged.pop("api_key")
        merged.pop("api_secret", None)
    return merged


@pytest.mark.parametrize(("where", "text"), yaml_samples(), ids=[w for w, _ in yaml_samples()])
def test_every_yaml_sample_parses_and_every_config_loads(where: str, text: str,
                                                         tmp_path: Path) -> None:
    data = yaml.safe_load(text)
    assert isinstance(data, dict), f"{where}: not a mapping"
    if set(data) & set(OTHER_FORMATS):
        return  # a Prometheus, Alertmanager or web config: parsing is what can be checked here
    files = tmp_path / "files"
    files.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(with_placeholder_files(as_config(data), files)))
    settings = load_settings({}, {}, str(config))  # nothing from the environment
    assert settings.clusters


def test_yaml_samples_are_found() -> None:
    """The check above sees the configuration samples of the docs (a broken fence would hide
    them): the configuration file, several clusters, the selection example, the events."""
    configs = [w for w, t in yaml_samples() if not set(yaml.safe_load(t)) & set(OTHER_FORMATS)]
    assert sum(w.startswith("docs/configuration.md:") for w in configs) >= 2, configs
    assert any(w.startswith("docs/cardinality.md:") for w in configs), configs
    assert any(w.startswith("docs/events.md:") for w in configs), configs
