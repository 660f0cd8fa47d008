"""Phones files for the demo, the benchmark and the chaos suite: distinct Russian mobile numbers, written
the ways people write them, with the duplicates and invalid lines a real file has.

- :func:`number` — the ``i``-th of 10**9 distinct numbers ``79XXXXXXXXX`` (an affine permutation:
  deterministic, and no set of a million numbers needed to keep them distinct).
- :func:`spell` — one number in one of the four spellings (``+7…``, ``7…``, ``+7 (9xx) xxx-xx-xx``,
  ``7 9xx xxx xxxx``).
- :func:`write_phones_file` — a file of N lines: every ``invalid_every``-th line invalid, every
  ``duplicate_every``-th an earlier number in another spelling, the rest distinct numbers in mixed spellings.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["INVALID", "number", "spell", "write_phones_file"]

# 387,420,489 = 3**18 is coprime to 10**9, so i -> (A*i + B) mod 10**9 is a permutation.
_PERM_A, _PERM_B, _PERM_M = 387_420_489, 12_345_678, 10**9
#: Lines intake must report as invalid (by line number) while it queues the rest.
INVALID = ("not-a-number", "+7 900 12", "12345", "+7 (900) 12-3O-45", "79001234567x")
SPELLINGS = 4


def number(i: int) -> str:
    """The ``i``-th distinct number, 11 digits, ``79…`` (``0 <= i < 10**9``)."""
    return f"79{(_PERM_A * i + _PERM_B) % _PERM_M:09d}"


def spell(digits: str, style: int) -> str:
    """``digits`` (``7XXXXXXXXXX``) written in spelling ``style % 4``."""
    style %= SPELLINGS
    if style == 0:
        return "+" + digits
    if style == 1:
        return digits
    if style == 2:
        return f"+{digits[0]} ({digits[1:4]}) {digits[4:7]}-{digits[7:9]}-{digits[9:]}"
    return f"{digits[0]} {digits[1:4]} {digits[4:7]} {digits[7:]}"


def write_phones_file(path: Path, lines: int, *, first: int = 0, invalid_every: int = 50,
                      duplicate_every: int = 20, header: str = "") -> dict[str, int]:
    """Write ``lines`` recipient lines (after an optional ``# header`` comment): every ``invalid_every``-th
    invalid (2 % by default), every ``duplicate_every``-th an earlier number spelled another way (5 %);
    the numbers are the ``first``-th distinct one on. Returns the counts: lines, unique, invalid, duplicates.
    ``0`` turns invalid lines or duplicates off."""
    unique = invalid = dups = 0
    with path.open("w", encoding="utf-8") as f:
        if header:
            f.write(f"# {header}\n")
        buf: list[str] = []
        for i in range(lines):
            if invalid_every and i % invalid_every == invalid_every - 1:
                buf.append(INVALID[(i // invalid_every) % len(INVALID)])
                invalid += 1
            elif duplicate_every and unique and i % duplicate_every == duplicate_every // 2:
                j = (i * 7919) % unique  # an earlier number, in another spelling
                buf.append(spell(number(first + j), j + 1))
                dups += 1
            else:
                buf.append(spell(number(first + unique), unique))
                unique += 1
            if len(buf) >= 10_000:
                f.write("\n".join(buf) + "\n")
                buf.clear()
        if buf:
            f.write("\n".join(buf) + "\n")
    return {"lines": lines, "unique": unique, "invalid": invalid, "duplicates": dups}
