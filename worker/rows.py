"""Personal texts: recipients' rows from a CSV or .xlsx file, and each one's text from a template.

A table has a header (its column names) and one recipient a row. A template is Jinja2 text whose
placeholders are column names, ``Здравствуйте, {{ name }}!``, run in Jinja2's immutable sandbox (filters,
tests and conditions, no code, no attribute starting with ``_``, no globals such as ``range``). Everything
here streams: a million-row file is read with flat memory, about 100,000 rows a second.

* :func:`compile_template` checks the template as a whole (syntax, placeholders against the header);
  :func:`check_columns` checks the phone, sender and time zone columns the caller named. Both run before
  anything is queued.
* :func:`open_table` reads a CSV file (``,`` ``;`` or tab, UTF-8 with or without BOM, Windows-1251 as
  Excel in Russia saves it, other encodings guessed) or the first sheet of an .xlsx workbook, and yields
  ``(line_no, {column: text})``.
* :func:`iter_rows` turns each row into a :class:`Row` (normalized phone, rendered text, sender, time
  zone) or a :class:`scheduler.intake.Rejected` whose reason names the column; :func:`iter_dicts` and
  :func:`iter_pairs` do the same for the Python API's dicts and ``(phone, text)`` pairs.

A placeholder must have a value in every row (an empty or missing one rejects the row), unless the template
tests it: one that appears in an ``{% if %}``, a ``x if y else z``, on the left of ``or`` or before
``|default`` may be empty (a cell missing from a short row then reads as empty).

Errors (all are ``ValueError``)::

    ValueError
    ├── TemplateError   the template is refused as a whole (syntax, unknown placeholder, unsafe attribute)
    ├── ColumnError     a column the caller named (phone, sender, time zone) is not in the header
    ├── RenderError     one row cannot be rendered (the sandbox refused it, a type error): the row is rejected
    └── scheduler.intake.IntakeError   the file cannot be read as a table (unopenable, binary, no header,
                        duplicate column names, a quote never closed); the intake stops
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import datetime as dt
import difflib
import functools
import hashlib
import io
import itertools
import operator
import os
import re
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, TypeAlias, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import charset_normalizer
import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from scheduler.intake import (
    MAX_DIGITS,
    MAX_LINE_BYTES,
    MIN_DIGITS,
    IntakeError,
    InvalidPhone,
    Rejected,
    normalize_phone,
)
from worker.smsc.encoding import not_utf8, validate_sender

if TYPE_CHECKING:
    from _csv import Reader

    from _typeshed import WriteableBuffer

__all__ = [
    "ColumnError",
    "RenderError",
    "Row",
    "Table",
    "Template",
    "TemplateError",
    "check_columns",
    "compile_template",
    "iter_dicts",
    "iter_pairs",
    "iter_rows",
    "open_table",
    "row_tuples",
]


class TemplateError(ValueError):
    """Raised when the template is refused as a whole; the message is one line (``template line 1: ...``)."""


class ColumnError(ValueError):
    """Raised when a column the caller named is not in the header; the message names the header's columns."""


class RenderError(ValueError):
    """Raised when one row cannot be rendered (a sandbox refusal at run time, a type error): one line."""


@dataclass(slots=True, unsafe_hash=True)
class Row:
    """One recipient: the row's line, the normalized phone, its text, its sender and time zone (or None).

    Not frozen, for speed only (a frozen dataclass's ``__init__`` costs 0.55 µs against 0.14 µs, a
    million times an intake): nothing changes a Row once made; it is hashable as it was.
    """

    line_no: int
    phone: str
    text: str
    sender: str | None = None
    tz_h: float | None = None
    #: Its text's parts when the reader counted them (a child process does: see worker.reader); None: the
    #: batcher counts them. Not part of what the row is.
    parts: int | None = dataclasses.field(default=None, compare=False, repr=False)


# ---------------------------------------------------------------------------------------------- templates

_MAX_REPEAT = 10_000
"""Longest text ``*`` may build (10x the provider's 1,000 characters): ``{{ 'x' * 10**9 }}`` is refused."""
_MAX_EXPONENT = 64


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox that also refuses to build a huge value from a short template."""

    # Intercepted operators also keep Jinja2's optimizer from folding ``'x' * 10**9`` at compile time.
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and right > _MAX_EXPONENT:
            raise SecurityError(f"an exponent above {_MAX_EXPONENT} is not allowed")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int) and len(seq) * n > _MAX_REPEAT:
                    raise SecurityError(f"repeating a value to more than {_MAX_REPEAT} items is not allowed")
        return super().call_binop(context, operator, left, right)


_ENV = _Sandbox(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
                finalize=lambda v: "" if v is None else v)
# No globals (range, dict, lipsum, cycler, joiner, namespace): nothing of them belongs in an SMS, and every
# render copies them into its context (measured: 5.5 µs a render with them, 2.3 µs without).
_ENV.globals.clear()

# What the template may test, so it may be empty: the node's field holding the tested expression.
_TESTS: tuple[tuple[type[nodes.Node], str], ...] = ((nodes.If, "test"), (nodes.CondExpr, "test"), (nodes.Or, "left"))


class Template:
    """A compiled template: its placeholders (column names) and those that must not be empty."""

    __slots__ = ("_columns", "_fmt", "_jinja", "_one", "_optional", "_values", "placeholders", "required", "source")

    def __init__(self, source: str, jinja: jinja2.Template, placeholders: frozenset[str],
                 optional: frozenset[str], plain: tuple[tuple[bool, str], ...] | None = None) -> None:
        self.source = source
        self._jinja = jinja
        self.placeholders = placeholders
        self.required = placeholders - optional
        self._optional = tuple(sorted(optional))
        #: A template of text and bare ``{{ column }}`` placeholders only, ``plain`` as (is_column, text)
        #: pieces, is rendered as ``fmt % values``: its text with ``%`` doubled and ``%s`` for each
        #: placeholder, the row's values in order (~0.2 µs a row against Jinja's ~2.7 µs). The same
        #: text: Jinja writes ``str(value)`` for each, and so does ``%s``; None (which Jinja writes as
        #: '') and a missing column (Jinja's error) go to Jinja.
        self._fmt: str | None = None
        #: A plain template's placeholders in the order ``_fmt`` takes their values (a name may repeat).
        self._columns: tuple[str, ...] | None = None
        self._values: Callable[[Mapping[str, object]], Any] = _no_values
        self._one = False
        if plain is not None:
            self._fmt = "".join("%s" if col else t.replace("%", "%%") for col, t in plain)
            columns = [t for col, t in plain if col]
            self._columns = tuple(columns)
            if columns:
                self._values = operator.itemgetter(*columns)
                self._one = len(columns) == 1

    def render(self, row: Mapping[str, object]) -> str:
        """The text for ``row``; raise :class:`RenderError` (one line) when it cannot be rendered."""
        if self._fmt is not None:
            try:
                values = self._values(row)
                if self._one:
                    values = (values,)
                if None not in values:
                    text: str = self._fmt % values
                    return text
            except Exception:  # noqa: S110 - a missing column, a value whose str() fails: Jinja says it
                pass
        for name in self._optional:
            if name not in row:
                row = {**{n: "" for n in self._optional}, **row}
                break
        try:
            return self._jinja.render(row)
        except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise RenderError(f"template: {_first_line(exc)}") from exc

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


def compile_template(source: str, columns: Sequence[str] | None = None) -> Template:
    """Compile ``source``; raise :class:`TemplateError` for a syntax error or an unsafe attribute, and,
    when ``columns`` (the header) is given, for a placeholder that is not one of them.

    >>> compile_template("Hello, {{ name|title }}!", ["phone", "name"]).placeholders
    frozenset({'name'})
    """
    if not source.strip():
        raise TemplateError("template: empty")
    if (why := not_utf8(source)) is not None:  # else every row's text would be refused for it, one by one
        raise TemplateError(f"template {why}")
    try:
        tree = _ENV.parse(source)
        _refuse_unsafe(tree)
        jinja = _ENV.from_string(tree)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template line {exc.lineno}: {_first_line(exc.message or exc)}") from exc
    placeholders = frozenset(meta.find_undeclared_variables(tree))
    optional: set[str] = set()
    for kind, field in _TESTS:
        for node in tree.find_all(kind):
            optional |= _names(getattr(node, field))
    for f in tree.find_all(nodes.Filter):
        if f.name in ("default", "d") and f.node is not None:
            optional |= _names(f.node)
    template = Template(source, jinja, placeholders, frozenset(optional) & placeholders, _plain_pieces(tree))
    if columns is not None:
        _check_placeholders(template, columns)
    return template


def _no_values(row: Mapping[str, object]) -> tuple[()]:
    return ()


def _plain_pieces(tree: nodes.Template) -> tuple[tuple[bool, str], ...] | None:
    """The pieces of a template made of text and bare ``{{ name }}`` outputs only, else None."""
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return None
    pieces: list[tuple[bool, str]] = []
    for node in tree.body[0].nodes:
        if isinstance(node, nodes.TemplateData):
            pieces.append((False, node.data))
        elif isinstance(node, nodes.Name) and node.ctx == "load":
            pieces.append((True, node.name))
        else:
            return None
    return tuple(pieces)


def _names(expr: nodes.Node) -> set[str]:
    found = [expr, *expr.find_all(nodes.Name)]
    return {n.name for n in found if isinstance(n, nodes.Name) and n.ctx == "load"}


def _refuse_unsafe(tree: nodes.Template) -> None:
    """Refuse at compile time what the sandbox would refuse in every row: ``x.__class__``, ``x['_y']``."""
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        attr: object = None
        if isinstance(node, nodes.Getattr):
            attr = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            attr = node.arg.value
        elif isinstance(node, nodes.Filter) and node.name == "attr" and node.args and isinstance(node.args[0],
                                                                                                  nodes.Const):
            attr = node.args[0].value
        if isinstance(attr, str) and attr.startswith("_"):
            raise TemplateError(f"template line {node.lineno}: attribute {attr!r} is not allowed "
                                "(the template runs in a sandbox)")


def _check_placeholders(template: Template, columns: Sequence[str]) -> None:
    unknown = sorted(template.placeholders - set(columns))
    if not unknown:
        return
    hint = _did_you_mean(unknown[0], columns)
    listed = ", ".join(repr(u) for u in unknown)
    noun = "placeholder" if len(unknown) == 1 else "placeholders"
    raise TemplateError(f"template: unknown {noun} {listed} (columns: {_listing(columns)}){hint}")


def check_columns(columns: Sequence[str], template: Template, phone_column: str = "phone",
                  sender_column: str | None = None, tz_column: str | None = None) -> None:
    """Raise before anything is queued: :class:`ColumnError` when the phone, sender or time zone column is
    not in the header ``columns``, :class:`TemplateError` when a placeholder is not."""
    for role, column in (("phone", phone_column), ("sender", sender_column), ("time zone", tz_column)):
        if column is not None and column not in columns:
            raise ColumnError(f"{role} column {column!r} is not in the header (columns: {_listing(columns)})"
                              f"{_did_you_mean(column, columns)}")
    _check_placeholders(template, columns)


def _did_you_mean(name: str, columns: Sequence[str]) -> str:
    same = [c for c in columns if c.casefold() == name.casefold()]
    close = same or difflib.get_close_matches(name, list(columns), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _listing(columns: Sequence[str], most: int = 20) -> str:
    shown = ", ".join(columns[:most])
    return shown + (f", … ({len(columns)} in all)" if len(columns) > most else "") if columns else "none"


def _first_line(exc: object) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# ---------------------------------------------------------------------------------------------- rows

_MISSING = object()
_MAX_CACHE = 1024  # distinct senders / time zones remembered: a few in practice, memory flat in any case


class _Overflow(dict[str, str]):
    """A row with more non-empty cells than the header has columns (a delimiter inside an unquoted field
    shifts every cell after it: such a row is rejected rather than sent a wrong text)."""

    __slots__ = ("cells",)
    cells: int


def iter_rows(rows: Iterable[tuple[int, Mapping[str, object]]], *, template: Template | str,
              phone_column: str = "phone", sender_column: str | None = None, tz_column: str | None = None,
              region: str | None = None, check_text: Callable[[str], object] | None = None) -> Iterator[Row | Rejected]:
    """Yield a :class:`Row` or a :class:`Rejected` for each ``(line_no, row)``, in order.

    A row is rejected, with every problem named by its column in one reason, when its phone is invalid
    (``normalize_phone(raw, region)``), a placeholder the template requires is missing or empty, the
    sender is invalid (an empty sender cell is None: the campaign's sender), the time zone is neither hours
    from UTC (``3``, ``+5.5``, ``UTC-4``, ``+05:30``) nor an IANA name (``Europe/Moscow``, its offset now),
    the template cannot render it, or ``check_text`` (e.g. ``worker.smsc.encoding.validate_message``)
    raises ``ValueError`` for its text. Call :func:`check_columns` first: a column missing from the header
    would reject every row. ``template`` given as its source is compiled here (a :class:`TemplateError`
    is raised at the first ``next()``), without a header to check its placeholders against.
    """
    if isinstance(template, str):
        template = compile_template(template)
    check = _RowCheck(template, phone_column, sender_column, tz_column, region, check_text).check
    for line_no, row in rows:
        yield check(line_no, row)


class _RowCheck:
    """:func:`iter_rows`'s verdict on one row, and what its fast twin :func:`row_tuples` shares with it
    (the remembered senders and zones, and the moment a zone's offset is taken at)."""

    def __init__(self, template: Template, phone_column: str, sender_column: str | None, tz_column: str | None,
                 region: str | None, check_text: Callable[[str], object] | None) -> None:
        self.sender_of = _memo(_sender)
        now = dt.datetime.now(dt.UTC)
        self.zone_of = _memo(lambda v: _zone(v, now))
        self.check = self._checker(template, phone_column, sender_column, tz_column, region, check_text)

    def _checker(self, template: Template, phone_column: str, sender_column: str | None, tz_column: str | None,
                 region: str | None, check_text: Callable[[str], object] | None
                 ) -> Callable[[int, Mapping[str, object]], Row | Rejected]:
        required = tuple(sorted(template.required))
        # The required cells of a row, all at once: when each is text with something besides whitespace
        # (str.strip() is empty exactly when the text is empty or isspace()), there is nothing to name.
        required_cells = operator.itemgetter(*required) if required else _no_values
        one_required = len(required) == 1
        render = template.render
        sender_of, zone_of = self.sender_of, self.zone_of

        def check(line_no: int, row: Mapping[str, object]) -> Row | Rejected:
            raw = row.get(phone_column, _MISSING)
            if type(raw) is str:  # what _phone does with text, inline
                try:
                    phone, problem = normalize_phone(raw, region), None
                except InvalidPhone as exc:
                    phone, problem = None, exc.reason
            else:
                phone, raw, problem = _phone(raw, region)
            problems = [] if problem is None else [f"column {phone_column!r}: {problem}"]
            if type(row) is _Overflow:
                problems.append(f"{row.cells} cells but {len(row)} columns in the header "
                                "(a field that contains the delimiter must be quoted)")
            try:
                cells = required_cells(row)
                filled = all(map(str.strip, (cells,) if one_required else cells))
            except (KeyError, TypeError):  # a missing column, a value that is not text: named below
                filled = False
            if not filled:
                for name in required:
                    v = row.get(name, _MISSING)
                    if v is _MISSING:
                        problems.append(f"column {name!r}: missing (the template uses it)")
                    elif v is None or (isinstance(v, str) and (not v or v.isspace())):
                        problems.append(f"column {name!r}: empty (the template uses it)")
            sender = tz_h = None
            if sender_column is not None:
                sender, problem = sender_of(row.get(sender_column))
                if problem is not None:
                    problems.append(f"column {sender_column!r}: {problem}")
            if tz_column is not None:
                tz_h, problem = zone_of(row.get(tz_column))
                if problem is not None:
                    problems.append(f"column {tz_column!r}: {problem}")
            if not problems:
                try:
                    text = render(row)
                    if check_text is not None:
                        check_text(text)
                except RenderError as exc:
                    problems.append(str(exc))
                except ValueError as exc:
                    problems.append(f"text: {_first_line(exc)}")
            if problems or phone is None:
                return Rejected(line_no, raw, "; ".join(problems))
            return Row(line_no, phone, text, sender, tz_h)

        return check


#: A row as :func:`row_tuples` yields it: ``(line_no, phone, text, sender, tz_h)`` for a :class:`Row`,
#: ``(line_no, raw, reason)`` for a :class:`Rejected`.
RowTuple: TypeAlias = "tuple[int, str, str, str | None, float | None] | tuple[int, str, str]"


def row_tuples(table: Table, *, template: Template | str, phone_column: str = "phone",
               sender_column: str | None = None, tz_column: str | None = None, region: str | None = None,
               check_text: Callable[[str], object] | None = None) -> Iterator[RowTuple]:
    """:func:`iter_rows` of ``table``'s rows, each as a plain tuple (:data:`RowTuple`): the same rows, line
    numbers, rejections and reasons, made for a pipe (:mod:`worker.reader`'s child) rather than for use.

    A plain template (text and bare ``{{ column }}`` placeholders) takes its values from a row's cells by
    their place in the header: no dict is built for a row that is whole (as many cells as the header has
    columns), whose phone normalizes, whose placeholders are filled and whose sender, zone and text pass.
    Any other row is given to :func:`iter_rows`'s own check as its dict, which names what is wrong. Measured
    on a million personal rows (2026-12-02): the child's CPU ~6.2 s with ``iter_rows`` (a dict, a list of
    problems and a Row a row), ~4.2 s with this.
    """
    if isinstance(template, str):
        template = compile_template(template)
    rc = _RowCheck(template, phone_column, sender_column, tz_column, region, check_text)
    check, columns = rc.check, table.columns
    n, at = len(columns), {c: i for i, c in enumerate(columns)}
    wanted = [phone_column, *(template._columns or ()), *(c for c in (sender_column, tz_column) if c is not None)]
    fmt = template._fmt
    if fmt is None or template.required != set(template._columns or ()) or any(c not in at for c in wanted):
        # Jinja renders, or every row is rejected (a column the header lacks): iter_rows's way
        for line_no, cells in table.records():
            yield _as_tuple(check(line_no, _row_dict(columns, cells)))
        return
    pi = at[phone_column]
    si = at[sender_column] if sender_column is not None else None
    ti = at[tz_column] if tz_column is not None else None
    places = [at[c] for c in template._columns or ()]
    values_of: Callable[[list[str]], tuple[str, ...]]
    if len(places) > 1:
        values_of = operator.itemgetter(*places)
    elif places:
        only = places[0]
        values_of = lambda cells: (cells[only],)  # noqa: E731 - itemgetter of one place is not a tuple
    else:
        values_of = lambda cells: ()  # noqa: E731 - a template without placeholders
    sender_of, zone_of = rc.sender_of, rc.zone_of
    lo, hi, plain_phones = MIN_DIGITS, MAX_DIGITS, region is None
    for line_no, cells in table.records():
        if len(cells) == n:
            raw = cells[pi]
            digits = raw[1:] if raw[:1] == "+" else raw
            if plain_phones and digits.isascii() and digits.isdigit() and lo <= len(digits) <= hi:
                phone: str | None = raw  # what normalize_phone returns for it
            else:
                try:
                    phone = normalize_phone(raw, region)
                except InvalidPhone:
                    phone = None
            if phone is not None:
                values = values_of(cells)
                if all(map(str.strip, values)):
                    sender = tz_h = problem = None
                    if si is not None:
                        sender, problem = sender_of(cells[si])
                    if ti is not None and problem is None:
                        tz_h, problem = zone_of(cells[ti])
                    if problem is None:
                        text = fmt % values
                        try:
                            if check_text is not None:
                                check_text(text)
                        except ValueError:
                            pass  # named by the check below
                        else:
                            yield line_no, phone, text, sender, tz_h
                            continue
        yield _as_tuple(check(line_no, _row_dict(columns, cells)))


def _as_tuple(item: Row | Rejected) -> RowTuple:
    if type(item) is Row:
        return item.line_no, item.phone, item.text, item.sender, item.tz_h
    assert isinstance(item, Rejected)
    return item.line_no, item.raw, item.reason


def iter_dicts(dicts: Iterable[Mapping[str, object]], *, template: Template | str, phone_column: str = "phone",
               sender_column: str | None = None, tz_column: str | None = None, region: str | None = None,
               check_text: Callable[[str], object] | None = None) -> Iterator[Row | Rejected]:
    """:func:`iter_rows` over the Python API's dicts, numbered from 1; values may be numbers or None.

    ``template`` given as its source is compiled now: a :class:`TemplateError` is raised by this call.
    """
    if isinstance(template, str):
        template = compile_template(template)
    return iter_rows(enumerate(dicts, 1), template=template, phone_column=phone_column,
                     sender_column=sender_column, tz_column=tz_column, region=region, check_text=check_text)


def iter_pairs(pairs: Iterable[tuple[object, str]], *, region: str | None = None,
               check_text: Callable[[str], object] | None = None) -> Iterator[Row | Rejected]:
    """A :class:`Row` or a :class:`Rejected` for each ``(phone, text)`` of the Python API, numbered from 1."""
    for line_no, (raw_phone, text) in enumerate(pairs, 1):
        phone, raw, problem = _phone(raw_phone, region)
        problems = [] if problem is None else [f"phone: {problem}"]
        if not isinstance(text, str):
            problems.append(f"text: expected str, not {type(text).__name__}")
        elif check_text is not None:
            try:
                check_text(text)
            except ValueError as exc:
                problems.append(f"text: {_first_line(exc)}")
        if problems or phone is None:
            yield Rejected(line_no, raw, "; ".join(problems))
        else:
            yield Row(line_no, phone, text)


def _phone(raw: object, region: str | None) -> tuple[str | None, str, str | None]:
    """(normalized phone or None, the raw value as text, the reason it was refused or None)."""
    if isinstance(raw, str):
        s = raw
    elif raw is _MISSING or raw is None:
        return None, "", "missing"
    elif isinstance(raw, int) and not isinstance(raw, bool):
        if raw < 0:
            return None, str(raw), "a negative number"
        s = str(raw)
    elif isinstance(raw, float) and raw.is_integer() and raw >= 0:
        s = str(int(raw))
    else:
        return None, repr(raw)[:40], f"expected a phone number as text or a whole number, not {type(raw).__name__}"
    try:
        return normalize_phone(s, region), s, None
    except InvalidPhone as exc:
        return None, s, exc.reason


_T = TypeVar("_T")


def _memo(fn: Callable[[object], _T]) -> Callable[[object], _T]:
    """``fn`` remembering its answers for text values (a few senders and zones repeat over many rows)."""
    cache: dict[str, _T] = {}

    def get(v: object) -> _T:
        if type(v) is not str:
            return fn(v)
        if v in cache:
            return cache[v]
        hit = fn(v)
        if len(cache) < _MAX_CACHE:
            cache[v] = hit
        return hit

    return get


def _sender(v: object) -> tuple[str | None, str | None]:
    if v is None or v is _MISSING:
        return None, None
    s = str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)
    s = s.strip()
    if not s:
        return None, None
    try:
        return validate_sender(s), None
    except ValueError as exc:
        return None, _first_line(exc)


_UTC_OFFSET = re.compile(r"(?:UTC|GMT)?\s*([+\-−]?)\s*(\d{1,2})(?:([.,]\d+)|:([0-5]\d))?", re.IGNORECASE)


def _zone(v: object, now: dt.datetime) -> tuple[float | None, str | None]:
    """Hours from UTC of a time zone cell: a number of hours, ``UTC+3``, ``+05:30`` or an IANA name."""
    if v is None or v is _MISSING:
        return None, None
    s = (str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)).strip()
    if not s:
        return None, None
    m = _UTC_OFFSET.fullmatch(s)
    if m is not None:
        sign, hours, fraction, minutes = m.groups()
        h = int(hours) + (float("0" + fraction.replace(",", ".")) if fraction else 0.0) + int(minutes or 0) / 60
        h = -h if sign in ("-", "−") else h
        if -12 <= h <= 14:
            return h, None
        return None, f"{s!r} is outside UTC-12 to UTC+14"
    try:
        offset = now.astimezone(ZoneInfo(s)).utcoffset()
    except (ZoneInfoNotFoundError, ValueError, OSError):
        offset = None
    if offset is None:
        return None, (f"{s[:40]!r} is neither hours from UTC (3, +5.5, UTC-4, +05:30) "
                      "nor a time zone name (Europe/Moscow)")
    return offset.total_seconds() / 3600, None


# ---------------------------------------------------------------------------------------------- tables

_XLSX_SUFFIXES = (".xlsx", ".xlsm", ".xltx", ".xltm")
_SAMPLE_BYTES = 64 * 1024
"""Bytes read first to tell the encoding and the delimiter; where they are all ASCII, the encoding is
told by the first line that is not (until then every candidate reads the same)."""
#: Bytes of a CSV read at a time (whole lines of them handed on at once).
_BLOCK_BYTES = 64 * 1024
_DELIMITERS = (";", "\t", ",")  # on a tie, in this order: Excel in Russia writes ';', names hold commas


@functools.cache
def _xlsx_errors() -> tuple[type[BaseException], ...]:
    """What a malformed workbook makes openpyxl raise (its parsers raise what they meet, it translates
    nothing). openpyxl is imported for a workbook only: ~50 ms that a CSV's enqueue does not wait for."""
    from openpyxl.utils.exceptions import InvalidFileException

    return (zipfile.BadZipFile, InvalidFileException, KeyError, ValueError, TypeError, IndexError, SyntaxError,
            OSError, EOFError, zlib.error)


class Table:
    """A table's header and its rows, streamed once; a context manager that closes its file.

    Iterating yields ``(line_no, {column: text})``: for CSV ``line_no`` is the physical line where the row
    starts (1 = the first line of the file, newlines inside quoted fields counted), for .xlsx the sheet's
    row number. Blank rows are skipped. A CSV row shorter than the header lacks the missing columns; one
    with more non-empty cells than the header is rejected by :func:`iter_rows`; empty extra cells are
    ignored. Every cell is text: an .xlsx number ``79001234567`` (or ``7.9001234567E10``) reads
    ``"79001234567"``, a date ``2026-12-01``, a date and time ``2026-12-01 14:30``.
    """

    def __init__(self, name: str, columns: list[str], records: Iterator[tuple[int, list[str]]], *,
                 digest: Callable[[], str], close: Callable[[], None], delimiter: str | None = None,
                 encoding: Callable[[], str | None] = lambda: None) -> None:
        self.name = name
        self.columns = columns
        self.delimiter = delimiter
        self._records = records
        self._digest = digest
        self._close = close
        self._encoding = encoding

    @property
    def encoding(self) -> str | None:
        """The CSV's encoding as read so far (``"utf-8"`` while it was all ASCII); None for .xlsx."""
        return self._encoding()

    def __iter__(self) -> Iterator[tuple[int, dict[str, str]]]:
        columns = self.columns
        return ((line_no, _row_dict(columns, cells)) for line_no, cells in self._records)

    def records(self) -> Iterator[tuple[int, list[str]]]:
        """The same rows as ``(line_no, cells)``, a row's cells in the header's order (a short CSV row has
        fewer, a long one more; an .xlsx row is padded to the header). Read the rows one way or the other."""
        return self._records

    def digest(self) -> str:
        """The SHA-256 (hex) of the file's raw bytes; the rest is read if the rows were not all read."""
        return self._digest()

    def close(self) -> None:
        self._close()

    def __enter__(self) -> Table:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_table(path: str | os.PathLike[str], *, encoding: str | None = None) -> Table:
    """Open a CSV file (``"-"`` = standard input) or, by its suffix, an .xlsx workbook's first sheet.

    ``encoding`` forces the CSV's encoding; without it a UTF-8 BOM means UTF-8, valid UTF-8 is UTF-8,
    plausible Windows-1251 is that, and charset-normalizer guesses anything else. The delimiter is the most
    frequent of ``;`` tab ``,`` in the header line. Raise :class:`IntakeError` (one line) when the file
    cannot be read as a table: unopenable, binary, no header, an empty or duplicate column name.
    """
    name = os.fspath(path)
    if name != "-" and os.path.splitext(name)[1].lower() in _XLSX_SUFFIXES:
        return _open_xlsx(name)
    if encoding is not None:
        try:
            encoding = codecs.lookup(encoding).name
        except LookupError as exc:
            raise IntakeError(f"{name}: unknown encoding {encoding!r}") from exc
    f = sys.stdin.buffer if name == "-" else _open_binary(name)
    label = "<stdin>" if name == "-" else name
    try:
        return _open_csv(f, label, encoding, close=f.close if name != "-" else lambda: None)
    except BaseException:
        if name != "-":
            f.close()
        raise


def _open_binary(name: str) -> BinaryIO:
    if os.path.isdir(name):
        raise IntakeError(f"{name}: cannot open: it is a folder, not a table")
    try:
        return open(name, "rb")  # the Table's close() closes it
    except FileNotFoundError as exc:
        raise IntakeError(f"{name}: cannot open: no such file") from exc
    except OSError as exc:
        raise IntakeError(f"{name}: cannot open: {exc.strerror or exc}") from exc


class _Hashed(io.RawIOBase):
    """The file's bytes (``head`` already read, then the rest), each fed to a SHA-256 once."""

    def __init__(self, f: BinaryIO, head: bytes) -> None:
        super().__init__()
        self._f = f
        self._head = memoryview(head)
        self.sha = hashlib.sha256(head)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        out = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(out), len(self._head))
            out[:n], self._head = self._head[:n], self._head[n:]
            return n
        data = self._f.read(len(out))
        self.sha.update(data)
        out[:len(data)] = data
        return len(data)

    def hexdigest(self) -> str:
        while data := self._f.read(1 << 20):
            self.sha.update(data)
        return self.sha.hexdigest()


def _open_csv(f: BinaryIO, name: str, encoding: str | None, *, close: Callable[[], None]) -> Table:
    try:
        head = f.read(_SAMPLE_BYTES)
    except OSError as exc:
        raise IntakeError(f"{name}: cannot read: {exc.strerror or exc}") from exc
    if encoding is None:
        enc = _sniff_encoding(head, name, final=len(head) < _SAMPLE_BYTES)
    else:
        if _ascii_compatible(encoding):
            _refuse_binary(head, name)
        enc = encoding
    raw = _Hashed(f, head)
    buf = io.BufferedReader(raw, 1 << 16)
    decoder = _Lines(name, enc)
    cr_only = b"\n" not in head and b"\r" in head
    if (enc is not None and not _ascii_compatible(enc)) or cr_only:
        lines = decoder.text_lines(buf)
    else:
        lines = decoder.byte_lines(buf)
    head_text = codecs.getincrementaldecoder(enc or "ascii")(errors="replace").decode(head)
    delimiter = _sniff_delimiter(head_text)
    # strict: a quote never closed (or text glued after a closing quote) stops the intake at its line,
    # instead of the rest of the file silently becoming one field.
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    cells = _first_record(reader, name)
    if cells is None:
        raise IntakeError(f"{name}: no header line (the file is empty); expected column names such as phone;name")
    columns = _header(cells, name)
    return Table(name, columns, _csv_records(reader, columns, name), digest=raw.hexdigest, close=close,
                 delimiter=delimiter, encoding=lambda: decoder.encoding or "utf-8")


def _refuse_binary(head: bytes, name: str) -> None:
    if head.startswith(b"PK\x03\x04"):
        raise IntakeError(f"{name}: a zip archive (an .xlsx workbook?): name it .xlsx, or save the sheet as CSV")
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        raise IntakeError(f"{name}: an Excel 97-2003 workbook (.xls): save it as .xlsx or as CSV")
    if b"\x00" in head:
        raise IntakeError(f"{name}: contains NUL bytes, not a text table (save the sheet as CSV UTF-8)")


def _sniff_encoding(data: bytes, name: str, *, final: bool) -> str | None:
    """The encoding of ``data``, or None when it is all ASCII (every candidate reads it the same).

    The order is deliberate: a BOM; then UTF-8, since non-ASCII text that decodes as UTF-8 is UTF-8 by
    all odds; then Windows-1251 when it reads as plausible Russian, because Excel in Russia saves CSV in it
    and charset-normalizer, asked first, mistakes short cp1251 text for other code pages (measured:
    ``79001234567;Иван`` comes back as big5hkscs); charset-normalizer only for the rest.
    """
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    _refuse_binary(data, name)
    if data.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if data.isascii():
        return None
    try:
        codecs.getincrementaldecoder("utf-8")().decode(data, final=final)
        return "utf-8"
    except UnicodeDecodeError as exc:
        # Many UTF-8 characters before the first byte that is not: a file in two encodings (rows pasted
        # from another export), which no single guess reads right. Windows-1251 text breaks UTF-8 at once.
        if sum(1 for c in data[:exc.start].decode() if c >= "\x80") >= 16:
            line = data.count(b"\n", 0, exc.start) + 1
            raise IntakeError(f"{name}: line {line}: byte 0x{data[exc.start]:02x} is not utf-8 like the lines "
                              "before it (save the sheet as CSV UTF-8)") from exc
    if _plausible_cp1251(data):
        return "cp1251"
    best = charset_normalizer.from_bytes(data).best()
    if best is None or not _ascii_compatible(best.encoding):
        raise IntakeError(f"{name}: cannot tell the text's encoding (neither UTF-8 nor Windows-1251): "
                          "save the sheet as CSV UTF-8")
    return codecs.lookup(best.encoding).name


_TYPOGRAPHY = frozenset("«»–—№…„“”‘’\u00a0•·°±€")
_MIXED = re.compile(r"[A-Za-z][\u0400-\u04ff]|[\u0400-\u04ff][A-Za-z]")


def _plausible_cp1251(data: bytes) -> bool:
    """True when ``data`` read as Windows-1251 looks like text in a Cyrillic alphabet: most non-ASCII
    characters are letters of the Russian alphabet (Ukrainian і ї є ґ and the like are a few percent of a
    text, as is typography such as « » —), and they do not sit inside Latin words, as a Western ``Müller``
    would (``Mьller``). UTF-8 Cyrillic misread as Windows-1251 fails the first test: every second
    character is one of ``ЂЃ‚ѓ…Љ‹ЊЌЋЏђ``, never a letter of the alphabet."""
    try:
        text = data.decode("cp1251")
    except UnicodeDecodeError:
        return False
    core = other = 0
    for c in text:
        if c < "\x80" or c in _TYPOGRAPHY:
            continue
        if "А" <= c <= "я" or c in "ЁёІіЇїЄєҐґЎў":
            core += 1
        else:
            other += 1
    return core > 0 and other * 4 <= core and len(_MIXED.findall(text)) * 10 <= core


def _ascii_compatible(enc: str) -> bool:
    probe = "phone;name,\t\r\n\"0123456789"
    try:
        return probe.encode(enc) == probe.encode("ascii") and codecs.lookup(enc).name not in ("utf-16", "utf-32")
    except (LookupError, UnicodeError):
        return False


class _Lines:
    """Physical lines of a CSV file as text, one per ``\\n`` (or ``\\r`` in a CR-only file)."""

    def __init__(self, name: str, encoding: str | None) -> None:
        self.name = name
        self.encoding = encoding

    def byte_lines(self, buf: io.BufferedReader[_Hashed]) -> Iterator[str]:
        # An ASCII-compatible encoding: split bytes at b'\n' (no multibyte character holds 0x0A) and decode,
        # so the encoding can still be decided by the first non-ASCII line after the sample. Whole lines are
        # read a block at a time, decoded at once and split by a StringIO (newline='\n': at '\n' only), all at
        # C speed (~0.2 µs a line against ~0.4 µs line by line); a block that needs more (the first non-ASCII
        # line of a file read as ASCII so far, a byte that is not of the encoding) goes line by line, which
        # names the line, as every check here does.
        return itertools.chain.from_iterable(self._blocks(buf))

    def _blocks(self, buf: io.BufferedReader[_Hashed]) -> Iterator[Iterable[str]]:
        name, n, carry = self.name, 0, b""  # n: the lines handed on so far
        while True:
            try:
                data = buf.read(_BLOCK_BYTES)
            except OSError as exc:
                raise IntakeError(f"{name}: line {n + 1}: cannot read: {exc.strerror or exc}") from exc
            if data:
                data = carry + data if carry else data
                cut = data.rfind(b"\n") + 1
                block, carry = data[:cut], data[cut:]
                if len(carry) > MAX_LINE_BYTES and not block:
                    raise IntakeError(f"{name}: line {n + 1}: longer than {MAX_LINE_BYTES} bytes (is it a table?)")
            else:
                block, carry = carry, b""  # the last line, without '\n'
            if block:
                # Only the first line can be longer than a block read: the others lie within one read.
                if (block.find(b"\n") + 1 or len(block)) > MAX_LINE_BYTES:
                    raise IntakeError(f"{name}: line {n + 1}: longer than {MAX_LINE_BYTES} bytes (is it a table?)")
                yield self._decoded(block, n)
                n += block.count(b"\n") + (not block.endswith(b"\n"))
            if not data:
                return

    def _decoded(self, block: bytes, n: int) -> Iterable[str]:
        """The lines of ``block`` (whole lines, the first one line ``n + 1``) as text."""
        enc = self.encoding
        if n == 0 and enc == "utf-8-sig":
            enc = self.encoding = "utf-8"
            block = block.removeprefix(codecs.BOM_UTF8)
            if not block:
                return [""]  # a file of a BOM alone: one empty line, as line by line
        try:
            if enc is None:
                if block.isascii():
                    return io.StringIO(block.decode("ascii"), newline="\n")
            else:
                return io.StringIO(block.decode(enc), newline="\n")
        except UnicodeDecodeError:
            pass
        parts = block.split(b"\n")
        lines = [part + b"\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
        return self._line_by_line(lines, n)

    def _line_by_line(self, lines: list[bytes], n: int) -> Iterator[str]:
        name, enc = self.name, self.encoding
        for chunk in lines:
            n += 1
            if enc is None:
                if chunk.isascii():
                    yield chunk.decode("ascii")
                    continue
                enc = self.encoding = _sniff_encoding(chunk, name, final=True)
                if enc is None or not _ascii_compatible(enc):
                    raise IntakeError(f"{name}: line {n}: cannot tell the text's encoding: save the sheet as "
                                      "CSV UTF-8")
            try:
                yield chunk.decode(enc)
            except UnicodeDecodeError as exc:
                raise IntakeError(f"{name}: line {n}: byte 0x{chunk[exc.start]:02x} is not {enc} like the lines "
                                  "before it (save the sheet as CSV UTF-8)") from exc

    def text_lines(self, buf: io.BufferedReader[_Hashed]) -> Iterator[str]:
        # UTF-16/32 (a BOM) or a CR-only file: a text wrapper splits lines at \n, \r\n or \r.
        enc = self.encoding = self.encoding or "utf-8"
        wrapper = io.TextIOWrapper(buf, encoding=enc, newline="")
        n = 0
        while True:
            try:
                s = wrapper.readline(MAX_LINE_BYTES + 1)
            except UnicodeDecodeError as exc:
                raise IntakeError(f"{self.name}: after line {n}: not {enc} (save the sheet as CSV UTF-8)") from exc
            except OSError as exc:
                raise IntakeError(f"{self.name}: line {n + 1}: cannot read: {exc.strerror or exc}") from exc
            if not s:
                return
            n += 1
            if len(s) > MAX_LINE_BYTES:
                raise IntakeError(f"{self.name}: line {n}: longer than {MAX_LINE_BYTES} characters")
            yield s


def _sniff_delimiter(text: str) -> str:
    """The most frequent of ``;`` tab ``,`` outside quotes in the first non-blank line of ``text``.

    Counted in the header rather than by ``csv.Sniffer``: the Sniffer looks for a character equally
    frequent on every line of a sample, which a header-only or one-row file, free text with commas or a
    quoted field with newlines defeats ("Could not determine delimiter", or a wrong guess); column names
    rarely hold a delimiter, so the header alone tells it.
    """
    counts = dict.fromkeys(_DELIMITERS, 0)
    quoted, seen = False, False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif ch in "\r\n":
            if seen:
                break
        elif ch in counts:
            counts[ch] += 1
            seen = True
        elif not ch.isspace():
            seen = True
    best = max(_DELIMITERS, key=lambda d: counts[d])  # max keeps the first on a tie
    return best if counts[best] else ","


def _first_record(reader: Reader, name: str) -> list[str] | None:
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return None
        except csv.Error as exc:
            raise IntakeError(f"{name}: line {start}: {_csv_reason(exc)}") from exc
        if any(c.strip() for c in cells):
            return cells


def _csv_reason(exc: csv.Error) -> str:
    text = _first_line(exc)
    if "unexpected end of data" in text:
        return "a quoted field that starts in this row is never closed"
    if "expected after" in text:
        return f"{text} (text after a closing quote; a quote inside a quoted field is written twice: \"\")"
    return text


def _csv_records(reader: Reader, columns: list[str], name: str) -> Iterator[tuple[int, list[str]]]:
    n = len(columns)
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise IntakeError(f"{name}: line {start}: {_csv_reason(exc)}") from exc
        if (len(cells) == n and any(cells)) or any(c.strip() for c in cells):
            yield start, cells


def _row_dict(columns: list[str], cells: list[str]) -> dict[str, str]:
    """A row's cells by column name."""
    if len(cells) == len(columns):
        return dict(zip(columns, cells))  # noqa: B905 - as long, just counted (strict= costs 0.14 µs)
    return _cells(columns, cells)


def _cells(columns: list[str], cells: Sequence[str]) -> dict[str, str]:
    """A row whose cell count differs from the header's: a short row lacks the columns it does not reach."""
    if len(cells) > len(columns) and any(c.strip() for c in cells[len(columns):]):
        row = _Overflow(zip(columns, cells, strict=False))
        row.cells = len(cells)
        return row
    return dict(zip(columns, cells, strict=False))


def _header(cells: Sequence[str], name: str) -> list[str]:
    names = [c.strip() for c in cells]
    if names:
        names[0] = names[0].lstrip("\ufeff").strip()
    while names and not names[-1]:
        names.pop()  # a trailing delimiter or formatted empty columns
    seen: dict[str, int] = {}
    for i, c in enumerate(names, 1):
        if not c:
            raise IntakeError(f"{name}: header: column {i} has no name")
        if c in seen:
            raise IntakeError(f"{name}: header: columns {seen[c]} and {i} are both named {c!r}")
        seen[c] = i
    return names


def _open_xlsx(name: str) -> Table:
    f = _open_binary(name)
    try:
        sha = hashlib.sha256()
        while data := f.read(1 << 20):
            sha.update(data)
        f.seek(0)
        import openpyxl

        wb = openpyxl.load_workbook(f, read_only=True, data_only=True)
    except _xlsx_errors() as exc:
        f.close()
        raise IntakeError(f"{name}: not a readable .xlsx workbook: {_first_line(exc)}") from exc

    def close() -> None:
        wb.close()
        f.close()

    try:
        if not wb.worksheets:
            raise IntakeError(f"{name}: the workbook has no sheet")
        ws = wb.worksheets[0]
        # The dimension a writer records may be wrong (some write A1): read every row there is.
        ws.reset_dimensions()
        rows = _xlsx_rows(iter(ws.iter_rows(values_only=True)), name)
        header = next(rows, None)
        if header is None:
            raise IntakeError(f"{name}: the first sheet is empty; expected a header row such as phone | name")
        columns = _header(header[1], name)
    except BaseException:
        close()
        raise
    return Table(name, columns, _xlsx_records(rows, columns), digest=sha.hexdigest, close=close)


def _xlsx_rows(it: Iterator[tuple[object, ...]], name: str) -> Iterator[tuple[int, list[str]]]:
    """The sheet's non-blank rows as text, with their row numbers (read-only mode yields every row)."""
    line_no = 0
    while True:
        try:
            values = next(it)
        except StopIteration:
            return
        except _xlsx_errors() as exc:
            raise IntakeError(f"{name}: row {line_no + 1}: cannot read: {_first_line(exc)}") from exc
        line_no += 1
        cells = [_cell_text(v) for v in values]
        if any(c.strip() for c in cells):
            yield line_no, cells


def _xlsx_records(rows: Iterator[tuple[int, list[str]]], columns: list[str]) -> Iterator[tuple[int, list[str]]]:
    n = len(columns)
    for line_no, cells in rows:
        if len(cells) < n:
            cells += [""] * (n - len(cells))  # a sheet row ends at its last non-empty cell
        yield line_no, cells


def _cell_text(v: object) -> str:
    """A cell's value as the text a recipient should see."""
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else repr(v)  # a phone stored as 79001234567.0
    if isinstance(v, dt.datetime):
        if v.time() == dt.time():
            return v.date().isoformat()
        return v.isoformat(sep=" ", timespec="minutes" if v.second == 0 and v.microsecond == 0 else "seconds")
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, dt.time):
        return v.isoformat(timespec="minutes" if v.second == 0 and v.microsecond == 0 else "seconds")
    return str(v)
