"""The exposition writer: escaping, label sets, client label columns, lines and headers."""

from __future__ import annotations

import pytest

from exporter import contract as c
from exporter.contract import Family
from exporter.exposition import (
    TEXT_FORMAT,
    SplitRow,
    client_label_sets,
    client_lines,
    encode_labels,
    escape,
    escape_help,
    extend,
    family_lines,
    group_lines,
    header,
    info_lines,
    label_column,
    label_set,
    line_template,
    openmetrics_header,
    sample_line,
    split_lines,
    template_labels,
    text_header,
)
from tests.exposition import by_name, samples_openmetrics, samples_text

GAUGE = Family("demo_gauge", "gauge", "A gauge.")
#: Label values that need each escape, and a `%` that a %-template must not read as a format.
AWKWARD = ['back\\slash', 'quote"d', "new\nline", "50%", "%s%r%%", "ünï客户", ""]


def test_escape_backslash_quote_and_newline() -> None:
    assert escape("back\\slash") == "back\\\\slash"
    assert escape('quote"d') == 'quote\\"d'
    assert escape("new\nline") == "new\\nline"
    assert escape('\\"\n') == '\\\\\\"\\n'  # backslash first, so no escape is escaped twice
    assert escape("plain-id 50%") == "plain-id 50%"


def test_help_escapes_backslash_and_newline_only() -> None:
    assert escape_help('a "quoted"\\path\nnext') == 'a "quoted"\\\\path\\nnext'


def test_label_set_puts_const_labels_first_and_escapes_values() -> None:
    const = (("cluster", 'pr"od'),)
    assert label_set(const, [("node", "n\\1"), ("class", "x")]) == (
        'cluster="pr\\"od",node="n\\\\1",class="x"')
    assert label_set((), [("node", "n1")]) == 'node="n1"'
    assert label_set() == ""


def test_extend_adds_pairs_after_the_labels() -> None:
    assert extend('node="n1"', ("le", "+Inf")) == 'node="n1",le="+Inf"'
    assert extend("", ("direction", "sent"), ("reason", "other")) == (
        'direction="sent",reason="other"')


def test_an_empty_label_set_writes_name_space_value() -> None:
    assert sample_line("x", "", 3) == "x 3\n"
    assert sample_line("x", 'a="1"', 0.5) == 'x{a="1"} 0.5\n'
    assert group_lines(GAUGE, [("", 1), ('node="a"', 2)]) == (
        b'demo_gauge 1\ndemo_gauge{node="a"} 2\n')


def test_group_lines_parse_back_with_awkward_values() -> None:
    rows = [(label_set((("cluster", "c"),), [("node", v)]), i) for i, v in enumerate(AWKWARD)]
    text = group_lines(GAUGE, rows).decode()
    parsed = by_name(samples_text(text_header(GAUGE) + text), "demo_gauge")
    assert parsed == {(("cluster", "c"), ("node", v)): i for i, v in enumerate(AWKWARD)}


def test_client_label_sets_const_first_then_clientid_then_columns() -> None:
    const = (("cluster", "prod"),)
    assert client_label_sets(const, ["a", 'b"']) == [
        '{cluster="prod",clientid="a"} ', '{cluster="prod",clientid="b\\""} ']
    assert client_label_sets((), ["a"]) == ['{clientid="a"} ']
    nodes = label_column("node", ["n1", "n2"])
    assert client_label_sets(const, ["a", "b"], [nodes]) == [
        '{cluster="prod",clientid="a",node="n1"} ', '{cluster="prod",clientid="b",node="n2"} ']


def test_label_column_converts_each_distinct_value_once() -> None:
    seen: list[object] = []

    def text(value: object) -> str:
        seen.append(value)
        return "yes" if value is True else str(value)

    values: list[object] = [True, "n\n1", True, "n\n1", True]
    assert label_column("x", values, text) == [
        ',x="yes"', ',x="n\\n1"', ',x="yes"', ',x="n\\n1"', ',x="yes"']
    assert sorted(map(str, seen)) == ["True", "n\n1"]


def test_label_column_default_text_of_none_and_booleans() -> None:
    assert label_column("flag", [None, True, False, 4]) == [
        ',flag=""', ',flag="true"', ',flag="false"', ',flag="4"']


@pytest.mark.parametrize("shared", [True, False], ids=["shared-template", "own-template"])
@pytest.mark.parametrize("gap", [False, True], ids=["every-value", "a-value-missing"])
def test_family_lines_with_percent_in_label_values(shared: bool, gap: bool) -> None:
    labels = template_labels(encode_labels(client_label_sets((), AWKWARD)))
    values: list[int | None] = list(range(len(AWKWARD)))
    if gap:  # the template is then made for the clients with a value: escaped all the same
        values[0] = None
    template = line_template(labels) if shared else None
    text = family_lines(b"demo_gauge", labels, values, template).decode()
    parsed = by_name(samples_text(text), "demo_gauge")
    assert parsed == {(("clientid", cid),): i for i, cid in enumerate(AWKWARD) if values[i]
                      is not None}
    assert 'demo_gauge{clientid="%s%r%%"} 4\n' in text


def test_a_none_value_leaves_its_line_out() -> None:
    labels = template_labels(encode_labels(client_label_sets((), ["a", "b", "c"])))
    template = line_template(labels)
    assert family_lines(b"g", labels, [1, None, 2.5], template) == (
        b'g{clientid="a"} 1\ng{clientid="c"} 2.5\n')
    assert family_lines(b"g", labels, [None, None, None], template) == b""


def test_values_written_already_are_put_in_as_they_are() -> None:
    labels = template_labels(encode_labels(client_label_sets((), ["a", "b"])))
    texts = [b"1733600514.123", None]
    assert family_lines(b"t", labels, texts, line_template(labels, TEXT_FORMAT),
                        TEXT_FORMAT) == b't{clientid="a"} 1733600514.123\n'
    assert family_lines(b"t", labels, [b"1.5", b"2"], None, TEXT_FORMAT) == (
        b't{clientid="a"} 1.5\nt{clientid="b"} 2\n')


def test_client_lines_for_named_clients() -> None:
    text = client_lines((("cluster", "prod"),), ["x", "y\\"], [0, None], c.CLIENT_ONLINE)
    assert text == b'emqx_client_online{cluster="prod",clientid="x"} 0\n'
    assert client_lines((), ["x"], [None], c.CLIENT_ONLINE) == b""


def test_info_lines_append_the_columns_inside_the_braces() -> None:
    labels = client_label_sets((), ["a", "b"])
    columns = [label_column("node", ["n1", "n2"]), label_column("zone", ["z", 'q"'])]
    assert info_lines(c.CLIENT_INFO, labels, columns) == (
        b'emqx_client_info{clientid="a",node="n1",zone="z"} 1\n'
        b'emqx_client_info{clientid="b",node="n2",zone="q\\""} 1\n')
    assert info_lines(c.CLIENT_INFO, labels, []) == (
        b'emqx_client_info{clientid="a"} 1\nemqx_client_info{clientid="b"} 1\n')


def test_split_lines_rows_of_pieces_a_single_value_or_nothing() -> None:
    labels = client_label_sets((), ["full", "short", "total", "none"])
    rows: list[SplitRow] = [[1, 2, 3], [4, 5], 9, None]
    text = split_lines(GAUGE, labels, "reason", ["a", "b", "rest"], rows)
    assert text == (b'demo_gauge{clientid="full",reason="a"} 1\n'
                    b'demo_gauge{clientid="full",reason="b"} 2\n'
                    b'demo_gauge{clientid="full",reason="rest"} 3\n'
                    b'demo_gauge{clientid="short",reason="a"} 4\n'
                    b'demo_gauge{clientid="short",reason="b"} 5\n'
                    b'demo_gauge{clientid="total"} 9\n')


def test_text_header_writes_info_as_gauge_and_escapes_help() -> None:
    family = Family("demo_info", "info", "Line one\nback\\slash")
    assert text_header(family) == (
        "# HELP demo_info Line one\\nback\\\\slash\n# TYPE demo_info gauge\n")
    assert header(family, "text") == text_header(family).encode()


def test_openmetrics_header_uses_the_family_name_without_suffix() -> None:
    counter = Family("demo_sent_total", "counter", "Sent.")
    assert openmetrics_header(counter) == "# TYPE demo_sent counter\n# HELP demo_sent Sent.\n"
    info = Family("demo_info", "info", "Info.")
    assert header(info, "openmetrics") == b"# TYPE demo info\n# HELP demo Info.\n"


def test_both_formats_parse_a_written_family() -> None:
    counter = Family("demo_sent_total", "counter", "Sent \\ in\nbytes.")
    labels = encode_labels(client_label_sets((("cluster", "c"),), ["a", "b"]))
    lines = family_lines(counter.name.encode(), template_labels(labels), [1, 2]).decode()
    expected = {(("clientid", "a"), ("cluster", "c")): 1, (("clientid", "b"), ("cluster", "c")): 2}
    assert by_name(samples_text(text_header(counter) + lines), "demo_sent_total") == expected
    om = openmetrics_header(counter) + lines + "# EOF\n"
    assert by_name(samples_openmetrics(om), "demo_sent_total") == expected
