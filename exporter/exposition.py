"""The one writer of exposition text: label escaping, label sets, sample lines, family headers.

Text format 0.0.4 and OpenMetrics share the sample syntax; only the headers differ. Every family
of a poll is written here (per-client columns, splits and info, watch extras, aggregates,
distributions); the other modules decide what to write. Two shapes of label set are used:

- a *label set*: the text between the braces, `cluster="prod",node="emqx@10.0.0.1"`, "" for none,
  for the few hundred aggregate series;
- a *client label set*: closed, `{clientid="sensor-17"} `, the braces and the space before the
  value included, for the per-client hot path: a 1M-client poll writes millions of samples, so
  each client's set is escaped once per poll and baked into a %-format of one line per client,
  and a family is then one C-level `template % values`, about ten times faster than an f-string
  per sample and forty times faster than prometheus_client metric objects.

Sample output:

    # TYPE emqx_client_received_bytes_total counter
    emqx_client_received_bytes_total{clientid="sensor-17"} 48213
    emqx_clients_online{node="emqx@10.0.0.1"} 33120
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from itertools import compress, repeat
from operator import is_not

from exporter.contract import Family, FormatName

#: Constant labels (e.g. `(("cluster", "prod"),)`), put in front of every series.
ConstLabels = tuple[tuple[str, str], ...]
#: A client's values of the pieces of a split family in order (the last may be missing), one
#: value when the version does not split it, None when it has no value at all.
SplitRow = Sequence[object] | int | None

#: The label that names a client in every per-client series.
CLIENT_LABEL = "clientid"


def escape(value: str) -> str:
    """Escape a label value for text format 0.0.4 and OpenMetrics (same rules in both)."""
    # Most client ids need no escaping; three C-speed scans beat three replaces.
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def escape_help(text: str) -> str:
    """Escape HELP text (backslash and newline only)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def label_text(value: object) -> str:
    """A raw value as label text: absent is "", booleans are "true"/"false"."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def pair(name: str, value: str) -> str:
    """`name="value"`, the value escaped."""
    return f'{name}="{escape(value)}"'


def label_set(*groups: Iterable[tuple[str, str]]) -> str:
    """`a="x",b="y"` from groups of (name, value) pairs in order, constant labels first."""
    return ",".join(pair(name, value) for pairs in groups for name, value in pairs)


def extend(labels: str, *pairs: tuple[str, str]) -> str:
    """A label set with pairs added after its own labels."""
    more = label_set(pairs)
    return f"{labels},{more}" if labels else more


def sample_line(name: str, labels: str, value: object) -> str:
    """`name{labels} value` (`name value` without labels), newline included."""
    return f"{name}{{{labels}}} {value}\n" if labels else f"{name} {value}\n"


def group_lines(family: Family, rows: Iterable[tuple[str, object]]) -> bytes:
    """Lines of an aggregate family from (label set, value) rows."""
    return encode_text([sample_line(family.name, labels, value) for labels, value in rows])


def encode_text(lines: Iterable[str]) -> bytes:
    # A lone surrogate cannot come from valid JSON, but never let one label sink a poll.
    return "".join(lines).encode("utf-8", "replace")


# --- per-client label sets (the hot path) --------------------------------------------------


def client_label_sets(const_labels: ConstLabels, clientids: Iterable[str],
                      columns: Sequence[Sequence[str]] = ()) -> list[str]:
    """Each client's closed label set: constant labels, `clientid`, then the `columns` (from
    `label_column`) in order."""
    const = label_set(const_labels)
    prefix = f'{{{const},{CLIENT_LABEL}="' if const else f'{{{CLIENT_LABEL}="'
    # The pair written inline: no call per client beyond `escape`.
    if not columns:
        return [f'{prefix}{escape(c)}"}} ' for c in clientids]
    return ["".join(row) + "} " for row in zip(
        [f'{prefix}{escape(c)}"' for c in clientids], *columns, strict=True)]


def label_column(name: str, values: Sequence[object],
                 text: Callable[[object], str] = label_text) -> list[str]:
    """`,name="value"` per value, to sit inside a client label set.

    Label values such as node, listener or protocol repeat across thousands of clients, so each
    distinct raw value is converted and escaped once.
    """
    texts = {v: text(v) for v in set(values)}
    fragments = {v: "," + pair(name, t) for v, t in texts.items()}
    return list(map(fragments.__getitem__, values))


def encode_labels(labels: Sequence[str]) -> list[bytes]:
    """Client label sets as UTF-8, once per poll for all of its families."""
    return [ls.encode("utf-8", "replace") for ls in labels]


#: How a line template writes a value: a number (`%r`: an int's or float's repr, which is what
#: the exposition formats want), or its text made already (`%s`).
NUMBER_FORMAT = b"%r"
TEXT_FORMAT = b"%s"


def template_labels(labels: Sequence[bytes]) -> list[bytes]:
    """Encoded client label sets as %-format text (a `%` in a value doubled), once per batch
    for every line template made of them."""
    return [ls.replace(b"%", b"%%") for ls in labels]


def line_template(labels: Sequence[bytes], value: bytes = NUMBER_FORMAT) -> bytes:
    """A %-format of one line per client, `%s{labels} <value>`, from `template_labels`."""
    pieces: list[bytes] = [b"%s"] * (3 * len(labels))
    pieces[1::3] = labels
    pieces[2::3] = (value + b"\n",) * len(labels)
    return b"".join(pieces)


def family_lines(name: bytes, labels: Sequence[bytes], values: Sequence[object],
                 template: bytes | None = None, value: bytes = NUMBER_FORMAT) -> bytes:
    """`name{labels} value` lines from client label sets as `template_labels` gives them; a
    None value leaves its line out. `value` says how values are written (`line_template`),
    `template` is the batch's template for it.

    The lines are one %-format of a line template, built in C: the batch's shared one when
    every client has a value, else one made for the clients that have.
    """
    missing = None in values
    if missing:
        keep = list(map(is_not, values, repeat(None)))
        labels = list(compress(labels, keep))
        values = list(compress(values, keep))
    if template is None or missing:
        template = line_template(labels, value)
    arguments: list[object] = [name] * (2 * len(values))
    arguments[1::2] = values
    return template % tuple(arguments)


def client_lines(const_labels: ConstLabels, clientids: Sequence[str],
                 values: Sequence[object], family: Family) -> bytes:
    """One line per client of a few named clients (no identity labels beside `clientid`)."""
    labels = encode_labels(client_label_sets(const_labels, clientids))
    return family_lines(family.name.encode(), template_labels(labels), values)


def info_lines(family: Family, labels: Sequence[str], columns: Sequence[Sequence[str]]) -> bytes:
    """`name{client labels,column labels} 1` per client: an info family's lines."""
    # Interleaved by slice assignment: name, `{identity`, the columns' labels, `} 1`.
    count = len(labels)
    pieces: list[str] = [family.name] * (4 * count)
    pieces[1::4] = [ls[:-2] for ls in labels]  # closed sets end in "} "
    pieces[2::4] = (columns[0] if len(columns) == 1 else map("".join, zip(*columns, strict=True))
                    if columns else ("",) * count)
    pieces[3::4] = ("} 1\n",) * count
    return encode_text(pieces)


def split_lines(family: Family, labels: Sequence[str], label: str, pieces: Sequence[str],
                rows: Iterable[SplitRow]) -> bytes:
    """Lines of a family split by `label`, per client (see `SplitRow`): one line per value of
    a row, labelled with its piece, or one line without the label for a single value."""
    name = family.name
    suffixes = [f",{pair(label, piece)}}} " for piece in pieces]
    chunks: list[str] = []
    for ls, row in zip(labels, rows, strict=True):
        if row is None:
            continue
        if isinstance(row, int):
            chunks.append(f"{name}{ls}{row}\n")
            continue
        inner = name + ls[:-2]
        # Not strict: a row stops early when its last piece, a remainder, is unknown.
        for suffix, value in zip(suffixes, row, strict=False):
            chunks.append(f"{inner}{suffix}{value}\n")
    return encode_text(chunks)


# --- headers ---------------------------------------------------------------------------------


def text_header(family: Family) -> str:
    """HELP and TYPE of text format 0.0.4, which has no info type: an info family is a gauge."""
    kind = "gauge" if family.type == "info" else family.type
    return f"# HELP {family.name} {escape_help(family.help)}\n# TYPE {family.name} {kind}\n"


def openmetrics_header(family: Family) -> str:
    """TYPE and HELP of OpenMetrics, under the family's OpenMetrics name."""
    name = family.om_name
    return f"# TYPE {name} {family.type}\n# HELP {name} {escape_help(family.help)}\n"


def header(family: Family, fmt: FormatName) -> bytes:
    """A family's header in the format."""
    return (text_header if fmt == "text" else openmetrics_header)(family).encode()
