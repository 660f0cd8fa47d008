"""Personal texts: tables read as people export them (Excel CSV in Windows-1251, UTF-8, tabs, .xlsx), and a
text per recipient from a template in Jinja2's sandbox; bad rows are named by line and column, bad templates
are refused before anything is queued."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import sys
import tracemalloc
from collections.abc import Iterable
from pathlib import Path

import openpyxl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.intake import IntakeError, Rejected
from worker import rows
from worker.rows import (
    ColumnError,
    Row,
    TemplateError,
    check_columns,
    compile_template,
    iter_dicts,
    iter_pairs,
    iter_rows,
    open_table,
)
from worker.smsc.encoding import validate_message


def test_public_surface_is_pinned() -> None:
    assert sorted(rows.__all__) == sorted([
        "ColumnError", "RenderError", "Row", "Table", "Template", "TemplateError", "check_columns",
        "compile_template", "iter_dicts", "iter_pairs", "iter_rows", "open_table", "row_tuples",
    ])
    for error in (rows.TemplateError, rows.ColumnError, rows.RenderError):
        assert issubclass(error, ValueError)


def _read(path: Path, template: str, **kwargs: object) -> list[Row | Rejected]:
    """What the enqueue does: open, check the template and columns against the header, stream the rows."""
    with open_table(path) as table:
        tpl = compile_template(template, table.columns)
        check_columns(table.columns, tpl, str(kwargs.get("phone_column", "phone")),
                      kwargs.get("sender_column"), kwargs.get("tz_column"))  # type: ignore[arg-type]
        return list(iter_rows(table, template=tpl, check_text=validate_message, **kwargs))  # type: ignore[arg-type]


def _by_line(items: Iterable[Row | Rejected]) -> dict[int, Row | Rejected]:
    return {item.line_no: item for item in items}


# --- CSV as people export it --------------------------------------------------------------------------


def test_an_excel_csv_in_windows_1251_renders_good_rows_and_names_bad_ones_by_line_and_column(tmp_path: Path) -> None:
    # As Excel in Russia saves "CSV (разделители - запятые)": ';', CRLF, cp1251, a quoted cell with a newline.
    text = ('Телефон;name;order\r\n'
            '+7 900 123-45-67;"Анна\r\nМария";A-1\r\n'      # lines 2-3: one row, a newline inside a cell
            '79001234568;;A-2\r\n'                          # line 4: the name is empty
            '79001234569;Пётр\r\n'                          # line 5: short row, no order (the template tests it)
            '79001234570\r\n'                               # line 6: short row, no name
            ';;\r\n'                                        # line 7: an empty row Excel writes: skipped
            '79001234571;Ёжик «Ли»;"B;2"\r\n')              # line 8: a quoted ';'
    path = tmp_path / "clients.csv"
    path.write_bytes(text.encode("cp1251"))

    got = _by_line(_read(path, "Здравствуйте, {{ name }}!{% if order %} Заказ {{ order }}.{% endif %}",
                         phone_column="Телефон"))

    assert got == {
        2: Row(2, "+79001234567", "Здравствуйте, Анна\r\nМария! Заказ A-1."),
        4: Rejected(4, "79001234568", "column 'name': empty (the template uses it)"),
        5: Row(5, "79001234569", "Здравствуйте, Пётр!"),
        6: Rejected(6, "79001234570", "column 'name': missing (the template uses it)"),
        8: Row(8, "79001234571", "Здравствуйте, Ёжик «Ли»! Заказ B;2."),
    }
    with open_table(path) as table:
        assert (table.delimiter, table.encoding) == (";", "cp1251")


def test_utf8_with_bom_comma_csv_reads_the_first_column_name_without_the_bom(tmp_path: Path) -> None:
    data = "\ufeffphone,name\n79001234567,\"Smith, John\"\n79001234568,Zoë 🙂\n".encode()
    path = tmp_path / "bom.csv"
    path.write_bytes(data)

    with open_table(path) as table:
        assert table.columns == ["phone", "name"]
        got = list(iter_rows(table, template=compile_template("Hi {{ name }}", table.columns)))
        assert table.digest() == hashlib.sha256(data).hexdigest()  # the file's raw bytes, BOM included
    assert got == [Row(2, "79001234567", "Hi Smith, John"), Row(3, "79001234568", "Hi Zoë 🙂")]


def test_plain_utf8_with_tabs(tmp_path: Path) -> None:
    path = tmp_path / "tabs.tsv"
    path.write_text("phone\tname\tcity\n79001234567\tОльга\tСанкт-Петербург, центр\n", encoding="utf-8")

    assert _read(path, "{{ name }} ({{ city }})") == [Row(2, "79001234567", "Ольга (Санкт-Петербург, центр)")]


def test_utf16_with_bom_as_excel_saves_unicode_text(tmp_path: Path) -> None:
    path = tmp_path / "unicode.txt"
    path.write_bytes("phone\tname\r\n79001234567\tАнна\r\n".encode("utf-16"))

    assert _read(path, "{{ name }}") == [Row(2, "79001234567", "Анна")]


def test_a_cr_only_file_as_old_mac_excel_saves_it_counts_lines(tmp_path: Path) -> None:
    path = tmp_path / "mac.csv"
    path.write_bytes(b"phone;name\r79001234567;Ann\r12;Bob\r")

    got = _read(path, "{{ name }}")

    assert got[0] == Row(2, "79001234567", "Ann")
    assert isinstance(got[1], Rejected) and got[1].line_no == 3


def test_windows_1251_after_more_than_the_sample_of_ascii_rows_is_still_read_as_windows_1251(tmp_path: Path) -> None:
    lines = ["phone;name"] + [f"7900{i:07d};John" for i in range(8000)] + ["79009999999;Иван"]
    path = tmp_path / "late.csv"
    data = ("\r\n".join(lines) + "\r\n").encode("cp1251")
    assert len(data) > 64 * 1024 and data.index("Иван".encode("cp1251")) > 64 * 1024
    path.write_bytes(data)

    got = _read(path, "{{ name }}")

    assert len(got) == 8001 and got[-1] == Row(8002, "79009999999", "Иван")


def test_a_western_code_page_is_not_mistaken_for_windows_1251(tmp_path: Path) -> None:
    path = tmp_path / "west.csv"
    names = ["Müller", "Gonçalves", "Jürgen Weiß", "Élodie Lefèvre", "Søren Ærø", "Françoise"]
    body = "".join(f"7900123456{i};{n}\r\n" for i, n in enumerate(names))
    path.write_bytes(("phone;name\r\n" + body).encode("cp1252"))

    got = _read(path, "{{ name }}")

    assert [r.text for r in got if isinstance(r, Row)] == names


def test_a_file_that_changes_encoding_midway_stops_at_the_line(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    for n in (10, 4000):  # the foreign line within the first 64 KiB read, and after them
        utf8 = "phone;name\n" + "".join(f"7900{i:07d};Анна\n" for i in range(n))
        path.write_bytes(utf8.encode() + "79009999999;Иван\n".encode("cp1251"))

        with pytest.raises(IntakeError, match=rf"line {n + 2}: byte 0x.. is not utf-8 like the lines before it"):
            with open_table(path) as table:
                list(table)
    # read as Windows-1251 it would be mojibake ("РђРЅРЅР°"): not taken for it
    assert not rows._plausible_cp1251("Анна Иванова, Пётр".encode().replace("И".encode(), b""))


def test_extra_cells_with_content_reject_the_row_and_empty_ones_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "shifted.csv"
    path.write_text("phone;name\n79001234567;Ann;;\n79001234568;Smith; John\n", encoding="utf-8")

    got = _read(path, "{{ name }}")

    assert got == [
        Row(2, "79001234567", "Ann"),
        Rejected(3, "79001234568", "3 cells but 2 columns in the header (a field that contains the delimiter "
                                   "must be quoted)"),
    ]


def test_a_quote_never_closed_stops_the_intake_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "quote.csv"
    path.write_text('phone;name\n79001234567;Ann\n79001234568;"Bob\n79001234569;Eve\n', encoding="utf-8")

    with open_table(path) as table, pytest.raises(IntakeError, match=r"line 3: a quoted field .* never closed"):
        list(table)


@pytest.mark.parametrize(("header", "reason"), [
    ("phone;name;name", "columns 2 and 3 are both named 'name'"),
    ("phone;;name", "column 2 has no name"),
])
def test_a_bad_header_is_refused_naming_the_column_number(tmp_path: Path, header: str, reason: str) -> None:
    path = tmp_path / "h.csv"
    path.write_text(f"{header}\n79001234567;a;b\n", encoding="utf-8")

    with pytest.raises(IntakeError, match=reason):
        open_table(path)


@pytest.mark.parametrize(("content", "reason"), [
    (b"", "no header line"),
    (b"\r\n\r\n", "no header line"),
    (b"PK\x03\x04\x14\x00\x06\x00", "a zip archive .* name it .xlsx"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100), r"Excel 97-2003 workbook \(.xls\)"),
    (b"\x7fELF\x02\x01\x01\x00\x00\x00", "NUL bytes"),
])
def test_a_file_that_is_not_a_table_is_refused_in_one_line(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(content)

    with pytest.raises(IntakeError, match=reason) as err:
        open_table(path)
    assert "\n" not in str(err.value)


def test_unopenable_paths_are_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(IntakeError, match="no such file"):
        open_table(tmp_path / "missing.csv")
    with pytest.raises(IntakeError, match="a folder"):
        open_table(tmp_path)
    with pytest.raises(IntakeError, match=r"not a readable \.xlsx workbook"):
        (tmp_path / "fake.xlsx").write_text("phone\n79001234567\n")
        open_table(tmp_path / "fake.xlsx")
    with pytest.raises(IntakeError, match="unknown encoding"):
        (tmp_path / "a.csv").write_text("phone\n79001234567\n")
        open_table(tmp_path / "a.csv", encoding="klingon")


def test_a_given_encoding_is_used_as_is(tmp_path: Path) -> None:
    path = tmp_path / "dos.csv"
    path.write_bytes("phone;name\r\n79001234567;Анна\r\n".encode("cp866"))

    with open_table(path, encoding="cp866") as table:
        got = list(iter_rows(table, template="{{ name }}"))
    assert got == [Row(2, "79001234567", "Анна")]


def test_standard_input_is_read_as_a_csv(monkeypatch: pytest.MonkeyPatch) -> None:
    data = "phone,name\n79001234567,Анна\n".encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))

    with open_table("-") as table:
        assert list(iter_rows(table, template="{{ name }}")) == [Row(2, "79001234567", "Анна")]
        assert table.digest() == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_texts_with_punctuation_newlines_cyrillic_and_emoji_come_out_byte_exact(tmp_path: Path,
                                                                                delimiter: str) -> None:
    texts = ['a: b, c; d | e\nf \\ g "q"', "Привет,\r\nмир; 🙂👍🏽", "  spaces kept  ", "{{ name }} stays literal",
             "tab\tinside", "€ ^ { } [ ~ ]"]
    path = tmp_path / "exact.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(["phone", "text"])
        w.writerows([f"7900123456{i}", t] for i, t in enumerate(texts))

    got = _read(path, "{{ text }}")

    assert [r.text for r in got if isinstance(r, Row)] == texts
    # line numbers count the newlines inside quoted cells
    assert [r.line_no for r in got] == [2, 4, 6, 7, 8, 9]


_FIELD = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1).filter(str.strip)


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(_FIELD, min_size=1, max_size=5),
       delimiter=st.sampled_from([",", ";", "\t"]), bom=st.booleans())
def test_any_text_written_by_csv_writer_comes_back_byte_exact(tmp_path_factory: pytest.TempPathFactory,
                                                               texts: list[str], delimiter: str, bom: bool) -> None:
    path = tmp_path_factory.mktemp("prop") / "t.csv"
    with path.open("w", encoding="utf-8-sig" if bom else "utf-8", newline="") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(["phone", "text"])
        w.writerows([f"7900123456{i}", t] for i, t in enumerate(texts))

    with open_table(path) as table:
        got = [r for r in iter_rows(table, template="{{ text }}")]
    assert [r.text for r in got if isinstance(r, Row)] == texts


def test_memory_stays_flat_over_a_long_file(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write("phone;name;order\r\n")
        f.writelines(f"7900{i:07d};Иван;{i}\r\n" for i in range(60_000))
    tpl = compile_template("Здравствуйте, {{ name }}!", ["phone", "name", "order"])

    tracemalloc.start()
    try:
        with open_table(path) as table:
            n = sum(1 for r in iter_rows(table, template=tpl) if isinstance(r, Row))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 60_000
    assert peak < 2_000_000, f"peak {peak} bytes for a {path.stat().st_size}-byte file"


# --- .xlsx --------------------------------------------------------------------------------------------


def test_an_xlsx_sheet_reads_numbers_as_phones_dates_as_iso_and_names_empty_cells(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["phone", "name", "due", "sum"])
    ws.append([79001234567, "Анна", dt.datetime(2026, 12, 1), 1500])     # row 2: phone as a whole number
    ws.append([79001234568.0, None, dt.datetime(2026, 12, 2, 14, 30), 99.5])  # row 3: empty name
    ws.append([None, None, None, None])                                   # row 4: blank, skipped
    ws.append(["+7 900 123-45-69", "Ёлка"])                               # row 5: trailing cells empty
    ws.cell(row=8, column=1, value=79001234570)                           # row 8 after a gap: name empty
    wb.worksheets[0].title = "Клиенты"
    wb.create_sheet("other").append(["ignored"])
    path = tmp_path / "clients.xlsx"
    wb.save(path)

    got = _by_line(_read(path, "{{ name }}, {{ due }}{% if sum %}: {{ sum }} ₽{% endif %}"))

    assert got == {
        2: Row(2, "79001234567", "Анна, 2026-12-01: 1500 ₽"),
        3: Rejected(3, "79001234568", "column 'name': empty (the template uses it)"),
        5: Rejected(5, "+7 900 123-45-69", "column 'due': empty (the template uses it)"),
        8: Rejected(8, "79001234570", "column 'due': empty (the template uses it); "
                                      "column 'name': empty (the template uses it)"),
    }
    with open_table(path) as table:
        assert table.digest() == hashlib.sha256(path.read_bytes()).hexdigest()
        assert dict(list(table)[1][1]) == {"phone": "79001234568", "name": "", "due": "2026-12-02 14:30",
                                            "sum": "99.5"}


def test_an_empty_xlsx_sheet_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.xlsx"
    openpyxl.Workbook().save(path)

    with pytest.raises(IntakeError, match="the first sheet is empty"):
        open_table(path)


# --- templates ----------------------------------------------------------------------------------------


def test_an_unknown_placeholder_is_refused_before_any_row_with_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("phone;name;order\n79001234567;Ann;1\n", encoding="utf-8")

    with open_table(path) as table:
        with pytest.raises(TemplateError) as err:
            compile_template("Hi {{ nmae }}", table.columns)
        assert str(err.value) == ("template: unknown placeholder 'nmae' (columns: phone, name, order); "
                                  "did you mean 'name'?")
        with pytest.raises(ColumnError, match=r"phone column 'tel' is not in the header \(columns: phone, name, "
                                              r"order\)"):
            check_columns(table.columns, compile_template("Hi", table.columns), phone_column="tel")
        with pytest.raises(ColumnError, match=r"sender column 'Sender' .*did you mean"):
            check_columns(["phone", "sender"], compile_template("Hi"), sender_column="Sender")


@pytest.mark.parametrize(("source", "message"), [
    ("Hello {{ name }", "template line 1: unexpected '}'"),
    ("Hello\n{% if name %}{{ name }}", "template line 2: Unexpected end of template"),
    ("{{ name|titel }}", "template line 1: No filter named 'titel'"),
    ("one\ntwo {{ ''.__class__ }}", "template line 2: attribute '__class__' is not allowed"),
    ("{{ name['__class__'] }}", "template line 1: attribute '__class__' is not allowed"),
    ("{{ name|attr('__init__') }}", "template line 1: attribute '__init__' is not allowed"),
    ("  ", "template: empty"),
    ("Caf\udce9 {{ name }}", "template holds the byte 0xE9 (at character 4), which is not UTF-8"),
    ("{{ name }} \ud83d", "template holds a lone surrogate (U+D83D at character 12)"),
])
def test_a_bad_template_is_refused_in_one_line_with_its_line(source: str, message: str) -> None:
    with pytest.raises(TemplateError) as err:
        compile_template(source, ["phone", "name"])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_filters_conditions_and_defaults_work_and_tested_placeholders_may_be_empty() -> None:
    tpl = compile_template("{{ name|title }}{% if order %}, заказ №{{ order }}{% endif %}"
                           "{{ ', ' ~ city if city }} — {{ shop|default('магазин', true) }}")
    assert tpl.placeholders == {"name", "order", "city", "shop"}
    assert tpl.required == {"name"}
    assert compile_template("{{ name or 'клиент' }}").required == set()

    got = list(iter_dicts([
        {"phone": "79001234567", "name": "иван петров", "order": "17", "city": "Казань", "shop": "Ромашка"},
        {"phone": "79001234568", "name": "анна", "order": "", "city": None},
        {"phone": "79001234569", "name": " "},
    ], template=tpl))

    assert got == [
        Row(1, "79001234567", "Иван Петров, заказ №17, Казань — Ромашка"),
        Row(2, "79001234568", "Анна — магазин"),
        Rejected(3, "79001234569", "column 'name': empty (the template uses it)"),
    ]


def test_the_sandbox_refuses_at_run_time_what_the_compile_could_not_see() -> None:
    tpl = compile_template("{{ name|attr(what) }}!")
    got = list(iter_dicts([{"phone": "79001234567", "name": "Ann", "what": "__class__"},
                           {"phone": "79001234568", "name": "Ann", "what": "upper"}], template=tpl))

    assert isinstance(got[0], Rejected) and got[0].reason.startswith("template: ")
    assert "unsafe" in got[0].reason
    assert isinstance(got[1], Row)


def test_a_template_cannot_build_a_huge_text() -> None:
    got = list(iter_dicts([{"phone": "79001234567", "n": "1000000000"}, {"phone": "79001234568", "n": "3"}],
                          template="{{ 'ab' * n|int }}"))

    assert isinstance(got[0], Rejected) and "more than 10000" in got[0].reason
    assert got[1] == Row(2, "79001234568", "ababab")


def test_a_template_without_placeholders_gives_every_row_the_same_text() -> None:
    got = list(iter_dicts([{"phone": "79001234567"}, {"phone": 79001234568}], template="Скидка 10%!"))

    assert got == [Row(1, "79001234567", "Скидка 10%!"), Row(2, "79001234568", "Скидка 10%!")]


# --- per-row checks -----------------------------------------------------------------------------------


def test_an_invalid_phone_is_rejected_while_the_other_rows_go_on(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("phone,name\n79001234567,Ann\n12345,Bob\n+7 900 12x,Eve\n,Joe\n8 900 123-45-70,Ivan\n",
                    encoding="utf-8")

    got = _read(path, "{{ name }}", region="RU")

    assert got == [
        Row(2, "+79001234567", "Ann"),
        Rejected(3, "12345", "column 'phone': not a valid number in region RU, nor with a country code; "
                             "write it with '+' and the country code"),
        Rejected(4, "+7 900 12x", "column 'phone': unexpected character 'x'; expected digits, one leading '+' "
                                  "and separators"),
        Rejected(5, "", "column 'phone': empty number"),
        Row(6, "+79001234570", "Ivan"),
    ]


def test_a_text_the_provider_would_refuse_is_rejected_naming_the_text(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("phone,note\n79001234567," + "x" * 1001 + "\n79001234568,ok\n", encoding="utf-8")

    got = _read(path, "{{ note }}")

    assert isinstance(got[0], Rejected) and got[0].reason.startswith("text: message is 1001 characters")
    assert got[1] == Row(3, "79001234568", "ok")


def test_sender_and_time_zone_columns(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("phone;name;from;tz\n"
                    "79001234567;A;Shop;Europe/Moscow\n"
                    "79001234568;B;;+5.5\n"
                    "79001234569;C;Магазин;Mars/Base\n"
                    "79001234570;D;Shop;UTC-4\n"
                    "79001234571;E;Shop;\n"
                    "79001234572;F;Shop;+05:45\n"
                    "79001234573;G;Shop;+15\n", encoding="utf-8")

    got = _read(path, "{{ name }}", sender_column="from", tz_column="tz")

    assert got[:2] == [Row(2, "79001234567", "A", "Shop", 3.0), Row(3, "79001234568", "B", None, 5.5)]
    assert isinstance(got[2], Rejected)
    assert got[2].reason.startswith("column 'from': sender contains")
    assert "; column 'tz': 'Mars/Base' is neither hours from UTC" in got[2].reason
    assert got[3:6] == [Row(5, "79001234570", "D", "Shop", -4.0), Row(6, "79001234571", "E", "Shop", None),
                        Row(7, "79001234572", "F", "Shop", 5.75)]
    assert got[6] == Rejected(8, "79001234573", "column 'tz': '+15' is outside UTC-12 to UTC+14")


def test_pairs_of_the_python_api_are_numbered_from_one() -> None:
    got = list(iter_pairs([("+7 900 123-45-67", "Привет"), (79001234568, "Hi"), ("79001234569", ""),
                           ("1", 5)], check_text=validate_message))  # type: ignore[list-item]

    assert got == [
        Row(1, "+79001234567", "Привет"),
        Row(2, "79001234568", "Hi"),
        Rejected(3, "79001234569", "text: message is empty"),
        Rejected(4, "1", "phone: 1 digit; a number needs 10 to 15; text: expected str, not int"),
    ]
