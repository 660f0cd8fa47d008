"""rows.row_tuples, the child reader's way through a table: exactly iter_rows's rows, rejections and reasons,
whether a row takes its fast path (a plain template's values read by their place in the header) or is
handed to iter_rows's own check; and the parts the child counts are validate_message's."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path
from typing import Any

import openpyxl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.intake import Rejected
from worker.reader import ChildRows
from worker.rows import Row, compile_template, iter_rows, open_table, row_tuples
from worker.smsc.encoding import check_message, text_parts, validate_message

HEADER = ["phone", "name", "order", "sender", "tz"]

_phones = st.sampled_from([
    "+79161234567", "79161234568", "89161234569", "9161234570", " +7 (916) 123-45-71 ", "+7 916 123 45 72",
    "tel:+79161234573", "+7916", "not a phone", "", "   ", "+7916123456789012", "٧٩١٦١٢٣٤٥٦٧", "+79161234567 ",
])
_cells = st.one_of(st.sampled_from(["", " ", "Анна", "a, b; c | d : e \\ f", "две\nстроки", "%s %d %%", "😀", "x" * 990,
                                    "O'Brien \"q\""]),
                   st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"),
                           max_size=12))
_senders = st.sampled_from(["", "Shop", "bad sender name that is far too long", " Shop "])
_zones = st.sampled_from(["", "3", "+5.5", "UTC-4", "Europe/Moscow", "Mars/Base", "+99"])
_rows = st.lists(st.tuples(_phones, _cells, _cells, _senders, _zones, st.integers(0, 3)), max_size=40)
_templates = st.sampled_from([
    "{{ name }}, заказ {{ order }}", "{{ name }}{{ name }}", "Без подстановок", "{{ order }}", "100% {{ name }}",
    "{{ name }}{% if order %} {{ order }}{% endif %}",  # not plain: Jinja, on iter_rows's path
    "{{ name|upper }}", "{{ missing_column }} {{ name }}",
])


def _write(path: Path, rows: list[tuple[str, str, str, str, str, int]], delimiter: str) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter=delimiter, lineterminator="\n")
        w.writerow(HEADER)
        for phone, name, order, sender, tz, shape in rows:
            cells = [phone, name, order, sender, tz]
            if shape == 1:
                cells = cells[:2]  # a short row: the columns it does not reach are missing
            elif shape == 2:
                cells = [*cells, "extra"]  # more cells than the header
            elif shape == 3:
                cells = [*cells, ""]  # an empty extra cell: ignored
            w.writerow(cells)


def _as_tuple(item: Row | Rejected) -> tuple[Any, ...]:
    if isinstance(item, Row):
        return item.line_no, item.phone, item.text, item.sender, item.tz_h
    return item.line_no, item.raw, item.reason


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=_rows, template=_templates, delimiter=st.sampled_from([",", ";", "\t"]),
       sender=st.booleans(), tz=st.booleans(), region=st.sampled_from([None, "RU"]))
def test_row_tuples_are_iter_rows(rows: list[Any], template: str, delimiter: str, sender: bool, tz: bool,
                                  region: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.csv"
        _write(path, rows, delimiter)
        kw: dict[str, Any] = {"template": template, "sender_column": "sender" if sender else None,
                              "tz_column": "tz" if tz else None, "region": region, "check_text": check_message}
        with open_table(path) as table:
            want = [_as_tuple(x) for x in iter_rows(table, **kw)]
        with open_table(path) as table:
            got = list(row_tuples(table, **kw))
    assert got == want


def test_a_plain_template_on_the_fast_path_gives_the_same_rows_rejections_and_reasons(tmp_path: Path) -> None:
    rows = [("+79161234567", "Анна", "1", "", "", 0), ("bad", "Иван", "2", "", "", 0),
            ("79161234568", "", "3", "", "", 0), ("79161234569", "Олег", "4", "", "", 1),
            ("79161234570", "x" * 995, "5", "", "", 0), ("+7 916 123-45-71", "Ольга", "6", "", "", 2),
            ("+7 916 123-45-72", "Пётр", "7", "", "", 3)]
    _write(tmp_path / "t.csv", rows, ";")
    kw: dict[str, Any] = {"template": "{{ name }}, заказ {{ order }}", "check_text": check_message}
    with open_table(tmp_path / "t.csv") as table:
        got = list(row_tuples(table, **kw))
    assert got == [
        (2, "+79161234567", "Анна, заказ 1", None, None),
        (3, "bad", "column 'phone': unexpected character 'b'; expected digits, one leading '+' and separators"),
        (4, "79161234568", "column 'name': empty (the template uses it)"),
        (5, "79161234569", "column 'order': missing (the template uses it)"),
        (6, "79161234570", "text: message is 1004 characters; the provider accepts at most 1000"),
        (7, "+7 916 123-45-71", "6 cells but 5 columns in the header (a field that contains the delimiter must be "
                                "quoted)"),
        (8, "+79161234572", "Пётр, заказ 7", None, None),
    ]


def test_the_child_counts_what_the_batcher_would_and_an_xlsx_reads_the_same(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(HEADER)
    for i in range(2_500):
        ws.append([79160000000 + i if i % 7 else "bad", f"Имя {i} 😀" * (1 + i % 13) if i % 5 == 0 else f"Name {i} [x]",
                   "" if i % 11 == 3 else str(i)])
    wb.save(tmp_path / "t.xlsx")
    template = "{{ name }}: заказ {{ order }}"
    with open_table(tmp_path / "t.xlsx") as table:
        want = list(iter_rows(table, template=compile_template(template, table.columns), check_text=validate_message))
    with open_table(tmp_path / "t.xlsx") as table:
        got = list(ChildRows(table, template=compile_template(template, table.columns), parts_of=text_parts))
    assert got == want
    sent = [r for r in got if isinstance(r, Row)]
    assert len(sent) > 1_900 and len(got) - len(sent) > 500
    assert [r.parts for r in sent] == [validate_message(r.text).parts for r in sent]
    assert {r.parts for r in sent} == {1, 2, 3}  # GSM and UCS-2 texts, an emoji two units
