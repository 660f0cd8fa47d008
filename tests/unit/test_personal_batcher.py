"""Where a personal campaign's batches end (PersonalBatcher): at the batch size, the request's bytes (the
texts form-encoded) or its SMS parts; list-unsafe texts in batches of their own text."""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.enqueue import CampaignSpec, PersonalBatcher, list_safe

_TEXT = st.text(st.sampled_from("aZ09 -._~%+&=Яё€😀\\\r\n"), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(_TEXT, min_size=1, max_size=120), size=st.integers(1, 30),
       max_bytes=st.integers(200, 3_000), max_parts=st.integers(3, 40))
def test_every_batch_keeps_within_its_bounds_and_every_recipient_is_in_one(texts: list[str], size: int,
                                                                           max_bytes: int, max_parts: int) -> None:
    def parts_of(text: str) -> int:
        return 1 + len(text) // 20

    batcher = PersonalBatcher(CampaignSpec(message="", parts=0, account="a", personal=True, parts_of=parts_of,
                                           batch_size=size, max_batch_bytes=max_bytes, max_batch_parts=max_parts))
    phones = [f"+7900{i:07d}" for i in range(len(texts))]
    batches = [b for p, t in zip(phones, texts, strict=True) for b in batcher.add(p, t, None)] + batcher.finish()
    assert sorted(p for b in batches for p in b.phones) == phones
    assert batcher.sms == sum(map(parts_of, texts))
    for b in batches:
        mine = [b.texts[p] for p in b.phones]
        assert b.bytes == sum(len(quote(t, safe="")) + 26 for t in mine)  # the request body's share, exactly
        assert len(b.phones) <= size
        if len(b.phones) > 1:
            assert b.bytes <= max_bytes and b.parts <= max_parts
        if not all(map(list_safe, mine)):
            assert len(set(mine)) == 1  # a list-unsafe text travels as the one text of its request
