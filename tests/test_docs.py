"""The README's generated tables match the code's tables."""

from __future__ import annotations

from pathlib import Path

from exporter.docs import render_readme

README = Path(__file__).parent.parent / "README.md"


def test_readme_tables_are_current() -> None:
    text = README.read_text()
    assert render_readme(text) == text, "run: python -m exporter.docs README.md"


def test_readme_gives_the_two_quick_start_commands() -> None:
    text = README.read_text()
    assert "make demo" in text and "make test" in text
