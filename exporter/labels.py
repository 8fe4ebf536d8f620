"""Label value escaping and label-string building for the exposition formats."""

from __future__ import annotations


def escape(value: str) -> str:
    """Escape a label value for text format 0.0.4 and OpenMetrics (same rules in both)."""
    # Most client ids need no escaping; three C-speed scans beat three replaces.
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def escape_help(text: str) -> str:
    """Escape HELP text (backslash and newline only)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")

