"""The intake's fast paths in worker/rows.py give what the slow ones give, byte for byte and error for error.

- A template of text and bare ``{{ column }}`` placeholders is rendered with ``%`` formatting, not Jinja:
  the same text for any value (None and a missing column go to Jinja), the same error for a missing one.
- A row's required cells are checked all at once (``str.strip``): the same rows are rejected, named alike.
- A CSV is read a block of lines at a time: the same lines as line by line, and the same error at the same
  line (a byte not of the encoding, an overlong line, the first non-ASCII line of an ASCII-looking file).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.intake import MAX_LINE_BYTES, IntakeError, Rejected
from worker import rows
from worker.rows import RenderError, Row, Template, compile_template, iter_rows, open_table

# ------------------------------------------------------------------------------------------- templates

_TEXT = st.text(st.characters(exclude_characters="{}%#"), max_size=12) | st.sampled_from(
    ["%", "%s", "%%", "%(name)s", "\r\n", "\n", "\r", "{", "}", " % ", "€%d"])
_COLUMNS = ["name", "order", "city", "x"]
_VALUE = (st.text(max_size=8) | st.integers() | st.floats(allow_nan=False) | st.none() | st.booleans()
          | st.sampled_from(["%s", "%", "{{ name }}", "", "  "]))


def _jinja_only(t: Template) -> Template:
    """The same template without its fast path: Jinja renders every row."""
    return Template(t.source, t._jinja, t.placeholders, t.placeholders - t.required, None)


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(st.one_of(_TEXT, st.sampled_from(_COLUMNS).map(lambda c: "{{ " + c + " }}")),
                       min_size=1, max_size=7),
       row=st.dictionaries(st.sampled_from(_COLUMNS), _VALUE))
def test_a_template_of_bare_placeholders_renders_as_jinja_renders_it(pieces: list[str], row: dict[str, object]) -> None:
    source = "".join(pieces)
    if not source.strip():
        return
    try:
        fast = compile_template(source)
    except rows.TemplateError:
        return  # text that Jinja reads as syntax: not a template of bare placeholders
    slow = _jinja_only(fast)
    try:
        expected: str | BaseException = slow.render(row)
    except RenderError as exc:
        expected = exc
    try:
        got: str | BaseException = fast.render(row)
    except RenderError as exc:
        got = exc
    if isinstance(expected, BaseException):
        assert isinstance(got, RenderError) and str(got) == str(expected)
    else:
        assert got == expected


def test_the_fast_path_is_taken_for_bare_placeholders_only() -> None:
    assert compile_template("Hi {{ name }}, 100% {{ order }}!")._fmt == "Hi %s, 100%% %s!"
    assert compile_template("Hi {{ name|title }}")._fmt is None
    assert compile_template("{% if name %}{{ name }}{% endif %}")._fmt is None
    assert compile_template("Hi {{ name }}").render({"name": None}) == "Hi "  # Jinja's finalize: None is ''
    with pytest.raises(RenderError, match="'order' is undefined"):
        compile_template("{{ name }} {{ order }}").render({"name": "Анна"})


# ------------------------------------------------------------------------------------------ required cells

_CELL = st.text(st.sampled_from(" \t\u00a0\u2003\u200b\u3000\x1cx\n\r\x0bя"), max_size=4)


@settings(max_examples=300, deadline=None)
@given(cells=st.lists(st.one_of(_CELL, st.none(), st.integers()), min_size=2, max_size=2),
       drop=st.sets(st.sampled_from(["name", "city"])))
def test_required_cells_are_named_as_empty_or_missing_exactly_when_they_are(cells: list[object],
                                                                           drop: set[str]) -> None:
    row: dict[str, object] = {"phone": "+79001234567", "name": cells[0], "city": cells[1]}
    for column in drop:
        del row[column]
    [got] = iter_rows([(2, row)], template="{{ name }} из {{ city }}")
    expected = []
    for column in ("city", "name"):
        v = row.get(column, rows._MISSING)
        if v is rows._MISSING:
            expected.append(f"column {column!r}: missing (the template uses it)")
        elif v is None or (isinstance(v, str) and (not v or v.isspace())):
            expected.append(f"column {column!r}: empty (the template uses it)")
    if expected:
        assert isinstance(got, Rejected) and got.reason == "; ".join(expected)
    else:
        assert isinstance(got, Row) and got.text == f"{row['name']} из {row['city']}"


# ------------------------------------------------------------------------------------------ CSV blocks

_LINE = st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")) | st.sampled_from(
    ["Иван;Пермь".encode(), "Иван;Пермь".encode("cp1251"), b"\xff\xfe", b"a\rb", b"", "«№»".encode(), b"\x00"])


def _line_by_line(data: bytes, encoding: str | None) -> tuple[list[str], str | None]:
    """The reference: every line through the line-by-line path (as the reader worked before blocks)."""
    parts = data.split(b"\n")
    lines = [p + b"\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    out: list[str] = []
    decoder = rows._Lines("t.csv", encoding)
    if lines and encoding == "utf-8-sig":
        decoder.encoding = "utf-8"
        lines[0] = lines[0].removeprefix(b"\xef\xbb\xbf")
    try:
        for i, line in enumerate(lines):
            if len(line) > MAX_LINE_BYTES:
                raise IntakeError(f"t.csv: line {i + 1}: longer than {MAX_LINE_BYTES} bytes (is it a table?)")
            out.extend(decoder._line_by_line([line], i))
    except IntakeError as exc:
        return out, str(exc)
    return out, None


def _blocks(data: bytes, encoding: str | None) -> tuple[list[str], str | None]:
    out: list[str] = []
    buf = io.BufferedReader(rows._Hashed(io.BytesIO(data), b""), 1 << 16)  # type: ignore[arg-type]
    try:
        for line in rows._Lines("t.csv", encoding).byte_lines(buf):
            out.append(line)
    except IntakeError as exc:
        return out, str(exc)
    return out, None


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(_LINE, max_size=40), newline_at_end=st.booleans(),
       encoding=st.sampled_from([None, "utf-8", "utf-8-sig", "cp1251"]), block=st.sampled_from([7, 16, 64, 1 << 16]))
def test_a_csv_read_a_block_at_a_time_gives_the_lines_and_errors_of_a_line_by_line_read(
        lines: list[bytes], newline_at_end: bool, encoding: str | None, block: int) -> None:
    data = b"\n".join(lines) + (b"\n" if newline_at_end and lines else b"")
    if encoding == "utf-8-sig":
        data = b"\xef\xbb\xbf" + data
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rows, "_BLOCK_BYTES", block)  # small blocks: lines across block boundaries
        assert _blocks(data, encoding) == _line_by_line(data, encoding)


@pytest.mark.parametrize("where", ["first", "middle", "last without a newline"])
def test_an_overlong_line_is_named_wherever_it_is(where: str) -> None:
    long = b"7" * (MAX_LINE_BYTES + 1)
    lines = [b"phone;name"] + [b"79001234567;x"] * 10_000
    at = {"first": 1, "middle": 5_000, "last without a newline": len(lines)}[where]
    lines.insert(at, long)
    data = b"\n".join(lines) + (b"" if where.startswith("last") else b"\n")
    got, error = _blocks(data, "utf-8")
    assert error == f"t.csv: line {at + 1}: longer than {MAX_LINE_BYTES} bytes (is it a table?)"
    assert len(got) == at  # every line before it was handed on


def test_a_long_file_names_a_bad_byte_and_a_bad_row_by_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    body = [f"7900{i:07d};Иван {i}\n".encode() for i in range(20_000)]
    body[12_345] = b"79001234567;\xff\n"  # not UTF-8, ~600 KB into the file: many blocks after the sample
    body[7_000] = b"123;Bad phone\n"
    path.write_bytes(b"phone;name\n" + b"".join(body))
    good = []
    with pytest.raises(IntakeError, match=r"line 12347: byte 0xff is not utf-8"), open_table(path) as table:
        for item in iter_rows(table, template="{{ name }}"):
            good.append(item)
    assert len(good) == 12_345
    bad = [x for x in good if isinstance(x, Rejected)]
    assert [(x.line_no, x.raw) for x in bad] == [(7_002, "123")]
    assert all(isinstance(x, Row) and x.text == f"Иван {x.line_no - 2}" for x in good if x not in bad)
