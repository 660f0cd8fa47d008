"""Saved audiences: named lists of recipients kept in Redis, for campaigns sent again and again
(a recurring campaign's ``audience="list:vip"``, :mod:`worker.recurring`).

Keys (namespace keys, ``{ns}`` = ``{smsc}:<ns>``; built here until :mod:`scheduler.keys` holds them):

==============================  ======  =====  ==================================  ===================
key                             type    TTL    written by                          read by
==============================  ======  =====  ==================================  ===================
``{ns}:aud``                    HASH    -      add, import, delete: list name ->   ``audience list``,
                                               JSON ``{"v": <version>,             every read of a
                                               "columns": [...], "updated_ms"}``   list
``{ns}:aud:<name>:<version>``   HASH    (1 h)  add, import, remove: the number's   an enqueue of the
                                               dedup key (its digits,              list, export, show
                                               :func:`scheduler.intake.phone_key`)
                                               -> the number as the intake
                                               normalized it, or a JSON object
                                               ``{"phone": ..., "<column>": ...}``
                                               when it carries template columns;
                                               an hour's TTL once replaced or
                                               deleted (1 d while an import
                                               writes it)
==============================  ======  =====  ==================================  ===================

**One member per number.** The field is the dedup key the intake uses, so ``+7 900 123-45-67`` and
``79001234567`` are one member (the later spelling and columns win). **The stop list is applied where it
always is**: at the intake of every campaign made from the list (``suppressed`` in its receipt) and again
before every request — never by editing the list, so that a number taken off the stop list is sent to
again without re-importing it. :meth:`Audiences.stopped` says how many members the stop list holds now.

**A replacing import is one step**: the new members are written to a version of their own, then the
index is switched to it (``MULTI``); the old version stays readable for an hour, so a campaign being
enqueued from the list meanwhile reads the old members whole, and one enqueued after reads the new ones
whole — never half of each. ``add`` and ``remove`` change the current version in place (an ``add`` racing
a replacing import of the same list may land in the old version: the import wins). Reads stream
(``HSCAN``): memory does not grow with the list, and the list's content digest (:class:`ListDigest`) does
not depend on the order HSCAN takes.

Errors: :class:`AudienceError` (a ``ValueError``, one line) for a bad list name or a list that does not
exist; :class:`scheduler.intake.InvalidPhone` for a number that is not one (never containing it).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import redis

from scheduler.intake import normalize_phone, phone_key
from scheduler.keys import Keys, text
from scheduler.ledger import server_time_ms
from scheduler.stoplist import StopList

__all__ = ["CHUNK", "NAME_RE", "OLD_VERSION_TTL_MS", "AudienceError", "Audiences", "ListDigest", "Member", "check_name"]

#: What a list's name may look like (it is part of a key and of ``list:<name>``).
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Members per Redis command (one round trip each, well under a millisecond of server time).
CHUNK = 500
#: Fields per HSCAN step (export and enqueue stream with flat memory).
_SCAN_COUNT = 1000
#: How long the members a replacing import writes live if the import dies before it switches the list.
_STAGING_TTL_MS = 86_400_000
#: How long the members a list had stay readable after a replacing import or a delete: an enqueue reading
#: them (a million members take seconds) finishes on what it began with.
OLD_VERSION_TTL_MS = 3_600_000


class AudienceError(ValueError):
    """Raised for a bad list name or a list that does not exist (one line)."""


def check_name(name: str) -> str:
    """``name`` when it can name a list; :class:`AudienceError` (one line) otherwise."""
    if not NAME_RE.match(name):
        raise AudienceError(f"list name {name!r}: use 1-64 characters of A-Za-z0-9_-")
    return name


@dataclass(frozen=True)
class Member:
    """One member of a list: the number as normalized, and its template columns (``{}``: none)."""

    phone: str
    columns: Mapping[str, str] = field(default_factory=dict)

    def row(self, columns: Sequence[str] = ()) -> dict[str, str]:
        """The member as a template row: ``phone`` and every one of ``columns`` ('' where it has none)."""
        out = {c: "" for c in columns}
        out.update(self.columns)
        out["phone"] = self.phone
        return out


def _value(phone: str, columns: Mapping[str, str]) -> str:
    if not columns:
        return phone
    return json.dumps({"phone": phone, **columns}, ensure_ascii=False, separators=(",", ":"))


def _member(value: object) -> Member:
    raw = text(value)
    if raw[:1] != "{":
        return Member(raw)
    d = json.loads(raw)
    phone = str(d.pop("phone"))
    return Member(phone, {str(k): str(v) for k, v in d.items()})


class ListDigest:
    """A list's content digest that HSCAN's order does not change: the sum (mod 2**256) of the SHA-256 of
    every member. Two reads of an unchanged list give the same digest (a recurring campaign's "same
    content"); a member added, removed or changed gives another."""

    _MOD = 1 << 256

    def __init__(self) -> None:
        self._sum = 0
        self.count = 0

    def add(self, key: object, value: object) -> None:
        h = hashlib.sha256(text(key).encode() + b"\0" + text(value).encode("utf-8", "surrogatepass")).digest()
        self._sum = (self._sum + int.from_bytes(h, "big")) % self._MOD
        self.count += 1

    def hexdigest(self) -> str:
        return f"{self._sum:064x}"


class Audiences:
    """The saved lists of one namespace (``keys``) on ``client``; numbers handed in are read in ``region``
    (``SMSC_DEFAULT_REGION``) as the intake reads them."""

    def __init__(self, client: redis.Redis, keys: Keys, *, region: str | None = None) -> None:
        self.r = client
        self.keys = keys
        self.region = region
        self.index = keys.prefix + "aud"

    def _key(self, name: str, version: str) -> str:
        return f"{self.index}:{name}:{version}"

    def _meta(self, name: str) -> dict[str, Any] | None:
        raw = self.r.hget(self.index, check_name(name))
        return json.loads(text(raw)) if raw else None

    def key(self, name: str) -> str:
        """The HASH that holds the list's members now; :class:`AudienceError` when there is no such list."""
        meta = self._meta(name)
        if meta is None:
            raise AudienceError(f"no saved list {name!r} (smsc-mailer audience list shows them)")
        return self._key(name, str(meta["v"]))

    # -- reading ---------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Every list's name, sorted."""
        return sorted(text(n) for n in self.r.hkeys(self.index))

    def exists(self, name: str) -> bool:
        return bool(self.r.hexists(self.index, check_name(name)))

    def count(self, name: str) -> int:
        return int(self.r.hlen(self.key(name)))

    def columns(self, name: str) -> list[str]:
        """The template columns the list's members were saved with (the union of them), in order."""
        meta = self._meta(name)
        return list(meta.get("columns", [])) if meta else []

    def info(self, name: str) -> dict[str, Any]:
        """``name``, ``members``, ``columns``, ``updated_ms``; :class:`AudienceError` when there is no such list."""
        key = self.key(name)
        meta = self._meta(name) or {}
        return {"name": name, "members": int(self.r.hlen(key)), "columns": list(meta.get("columns", [])),
                "updated_ms": int(meta.get("updated_ms", 0))}

    def scan(self, name: str, *, digest: ListDigest | None = None) -> Iterator[Member]:
        """Every member, in no particular order, with flat memory (``HSCAN``: a member there from start to
        end is yielded, rarely twice; one added or removed meanwhile may or may not be). A replacing import
        meanwhile does not disturb it: it reads the members the list had when it began. ``digest`` is fed
        every member read. :class:`AudienceError` when there is no such list."""
        for key, value in self.r.hscan_iter(self.key(name), count=_SCAN_COUNT):
            if digest is not None:
                digest.add(key, value)
            yield _member(value)

    def contains(self, name: str, phone: str) -> bool:
        return bool(self.r.hexists(self.key(name), phone_key(normalize_phone(phone, self.region))))

    def stopped(self, name: str, stoplist: StopList) -> int:
        """How many members are on the stop list now (a campaign of the list would leave them out)."""
        n = 0
        it = self.scan(name)
        while chunk := [m.phone for m in islice(it, CHUNK)]:
            n += sum(stoplist.contains(chunk))
        return n

    # -- writing ---------------------------------------------------------------------------------
    def add(self, name: str, members: Iterable[str | tuple[str, Mapping[str, str]]]) -> int:
        """Add numbers (or ``(number, columns)`` pairs) to the list, creating it; return how many were not
        members yet (a member added again takes the new spelling and columns). Streams in chunks of
        :data:`CHUNK`; a number that is not one raises ``InvalidPhone`` before its chunk is written (the
        chunks before it stay added)."""
        check_name(name)
        fresh = json.dumps({"v": secrets.token_hex(4), "columns": [], "updated_ms": server_time_ms(self.r)})
        self.r.hsetnx(self.index, name, fresh)  # a new list; an existing one keeps its members
        added, columns = self._write(self.key(name), members)
        self._update(name, columns)
        return added

    def replace(self, name: str, members: Iterable[str | tuple[str, Mapping[str, str]]]) -> int:
        """Make the list exactly ``members``, creating it; return how many it holds. The new members are
        written to a HASH of their own, then the list is switched to it in one step: a campaign enqueued
        from the list meanwhile reads the old members whole (they are kept :data:`OLD_VERSION_TTL_MS`).
        Nothing changes if the input fails midway."""
        check_name(name)
        version = secrets.token_hex(4)
        staging = self._key(name, version)
        try:
            _, columns = self._write(staging, members, ttl_ms=_STAGING_TTL_MS)
            meta = json.dumps({"v": version, "columns": columns, "updated_ms": server_time_ms(self.r)},
                              separators=(",", ":"))

            def switch(pipe: Any) -> None:
                old = pipe.hget(self.index, name)
                pipe.multi()
                pipe.persist(staging)
                pipe.hset(self.index, name, meta)
                if old:
                    pipe.pexpire(self._key(name, str(json.loads(text(old))["v"])), OLD_VERSION_TTL_MS)

            self.r.transaction(switch, self.index)
        except BaseException:
            self.r.delete(staging)
            raise
        return int(self.r.hlen(staging))

    def remove(self, name: str, phones: Iterable[str]) -> int:
        """Take numbers (any spelling) off the list; return how many were members."""
        key = self.key(name)
        removed = 0
        it = iter(phones)
        while chunk := list(islice(it, CHUNK)):
            removed += int(self.r.hdel(key, *{phone_key(normalize_phone(p, self.region)) for p in chunk}))
        return removed

    def delete(self, name: str) -> bool:
        """Delete the list; whether there was one. A campaign being enqueued from it meanwhile still reads
        its members (they are kept :data:`OLD_VERSION_TTL_MS`)."""
        meta = self._meta(name)
        if meta is None:
            return False
        pipe = self.r.pipeline(transaction=True)
        pipe.pexpire(self._key(name, str(meta["v"])), OLD_VERSION_TTL_MS)
        pipe.hdel(self.index, name)
        return bool(pipe.execute()[1])

    def _write(self, key: str, members: Iterable[str | tuple[str, Mapping[str, str]]], *,
               ttl_ms: int | None = None) -> tuple[int, list[str]]:
        """Write members into ``key``; (how many were new there, the columns met, in order)."""
        added = 0
        seen_columns: dict[str, None] = {}
        it = iter(members)
        while chunk := list(islice(it, CHUNK)):
            mapping: dict[Any, Any] = {}  # redis-py types its keys invariantly
            for m in chunk:
                raw, cols = (m, {}) if isinstance(m, str) else m
                phone = normalize_phone(raw, self.region)
                cols = {str(k): str(v) for k, v in cols.items() if k != "phone"}
                seen_columns.update(dict.fromkeys(cols))
                mapping[phone_key(phone)] = _value(phone, cols)
            pipe = self.r.pipeline(transaction=False)
            pipe.hset(key, mapping=mapping)
            if ttl_ms is not None:
                pipe.pexpire(key, ttl_ms)
            added += int(pipe.execute()[0])
        return added, list(seen_columns)

    def _update(self, name: str, columns: list[str]) -> None:
        """The list's columns (those it had, then the new ones) and its update time, in its index entry."""
        now = server_time_ms(self.r)

        def update(pipe: Any) -> None:
            raw = pipe.hget(self.index, name)
            if not raw:
                return  # deleted meanwhile
            meta = json.loads(text(raw))
            meta["columns"] = list(dict.fromkeys([*meta.get("columns", []), *columns]))
            meta["updated_ms"] = now
            pipe.multi()
            pipe.hset(self.index, name, json.dumps(meta, separators=(",", ":")))

        self.r.transaction(update, self.index)
