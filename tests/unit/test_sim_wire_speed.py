"""The simulator's fast form decoding and JSON writing give exactly what the standard library's slow ones
give: the answers our client parses, and the requests the official clients send, read as before.

Hypothesis drives both: every byte that matters to a form (``% & = +``, hex digits in both cases, bytes
outside ASCII) and nested JSON values."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.sim.rules import _dumps
from worker.sim.transport import _pairs

_FORM_BYTES = [*b"%&=+abcXYZ019fF", 0x20, 0x7F, 0x80, 0x9F, 0xD0, 0xFF]


@settings(max_examples=3000)
@given(st.lists(st.sampled_from(_FORM_BYTES), max_size=80))
def test_form_pairs_are_urllibs(raw: list[int]) -> None:
    body = bytes(raw)
    assert _pairs(body) == parse_qsl(body.decode("latin-1"), keep_blank_values=True, encoding="latin-1")


def test_a_cyrillic_list_decodes_to_its_utf8_bytes() -> None:
    text = "Иван, заказ №123 ждёт: 100% оплачен"
    body = "list=" + "".join(f"%{b:02X}" for b in f"79001234567:{text}".encode()) + "&fmt=3&bad=%zz%4"
    pairs = dict(_pairs(body.encode("ascii")))
    assert pairs["list"].encode("latin-1").decode("utf-8") == f"79001234567:{text}"
    assert pairs["fmt"] == "3" and pairs["bad"] == "%zz%4"  # a broken escape stays as written


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text())
_TREES = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.tuples(inner, inner), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=25)


@settings(max_examples=2000)
@given(_TREES)
def test_answers_are_written_as_json_with_indent_0(obj: Any) -> None:
    assert _dumps(obj) == json.dumps(obj, ensure_ascii=False, indent=0)


def test_a_send_answer_is_one_member_a_line() -> None:
    answer = {"id": 33, "cnt": 2, "phones": [{"phone": "79001234567", "cost": "1.50"}, {"phone": "7900", "error": 7}]}
    assert _dumps(answer) == ('{\n"id": 33,\n"cnt": 2,\n"phones": [\n{\n"phone": "79001234567",\n"cost": "1.50"\n},'
                              '\n{\n"phone": "7900",\n"error": 7\n}\n]\n}')
    assert json.loads(_dumps(answer)) == answer
