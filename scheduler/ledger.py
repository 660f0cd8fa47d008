"""The ledger: batches move due → leased → sending → done, every step fenced and atomic.

A batch is taken by one task execution at a time (a fresh token per execution, written by
``begin``); ``mark_sending`` records the send intent before the request leaves; ``record`` applies
the outcome to the batch and the campaign's counters in one script. A message delivered twice, a
worker killed mid-batch or a lease that ran out can never make a recipient count twice: the token
fences every write, and a batch caught ``sending`` is settled through the provider's status before
anything is sent again.

**One clock** (design invariant 9): every script decides by the Redis server's clock
(``redis.call('TIME')``). Each method takes ``now_ms: int | None = None``: ``None`` is the server's
clock, a value is only for tests that step time. :attr:`Begin.now_ms` and :attr:`Sending.sent_ms` hand
the server's time back, so a caller can compute an absolute due time on the same clock; or it gives a
relative one (:attr:`Outcome.due_in_ms`) and the script adds it to the server's time when it records.

**Quarantine** (a poison batch must not loop for ever): ``begin`` counts the executions that began and
never recorded an outcome (a crash, an exception outside the classified errors); ``record`` ends the
run. After ``quarantine_after`` of them (default 5) ``begin`` answers :attr:`BeginVerdict.QUARANTINE`:
the batch's pending recipients fail with the reason (``quarantined after 5 attempts: <last error>``,
the last error as left by :meth:`Ledger.note_error`), counted in the campaign's ``failed`` and
``quarantined``. A batch whose last request may be with the provider is first handed to one more
execution to settle it (:meth:`Ledger.quarantine` then fails the rest); if that execution does not
record either, the recipients fail with a reason that says some may have been sent.

**The settle margin** — when a request whose answer never came is surely over at the provider — is
:func:`settle_margin_ms`: the request's hard deadline plus the settle horizon (the provider may still
be processing after our deadline, and status.php lags behind acceptance).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import redis

from scheduler.keys import Keys, split_ref
from scheduler.keys import text as _s
from scheduler.scripts import Arg, Scripts, clock_arg

__all__ = [
    "QUARANTINE_AFTER",
    "Begin",
    "BeginVerdict",
    "Launch",
    "LaunchVerdict",
    "Ledger",
    "Outcome",
    "Sending",
    "Settle",
    "server_time_ms",
    "settle_after_ms",
    "settle_margin_ms",
]

#: Executions that began and never recorded an outcome, after which a batch is quarantined: enough for
#: a few worker kills in a row, few enough that a poison batch costs little (and each attempt may count
#: toward its subscribers' flood chains).
QUARANTINE_AFTER = 5

#: Urgent batches the claim may lease beyond the window: the login's requests in flight (fewer than 15),
#: so that a window full of normal batches never keeps an urgent one waiting, and the overrun stays
#: one login's worth of requests (``lua/claim.lua``, docs/priorities.md).
_URGENT_EXTRA = 14
#: Bulk's minimum share of the claims that normal and bulk compete for: 1 in this many.
_BULK_EVERY = 10


class BeginVerdict(StrEnum):
    """What :meth:`Ledger.begin` decided."""

    OK = "ok"  # this execution owns the batch
    MISSING = "missing"  # no such batch (stale message)
    DONE = "done"  # every recipient already has a final state (a redelivered message)
    BUSY = "busy"  # another execution holds the batch
    CANCELLED = "cancelled"  # the campaign was cancelled: the pending recipients now are (Begin.cancelled)
    PARKED = "parked"  # campaign paused or account stopped: kept for resume
    DEFERRED = "deferred"  # not before Begin.until_ms (back-off, settle wait, due later)
    QUARANTINE = "quarantine"  # a poison batch: see Begin.quarantined / Begin.settle


class Settle(StrEnum):
    """What :meth:`Ledger.record` does with the batch's "settle first" flag."""

    SET = "1"  # the request may have reached the provider: status.php before anything is sent again
    CLEAR = "0"  # settled
    KEEP = ""  # unchanged


@dataclass(frozen=True)
class Begin:
    """The answer of :meth:`Ledger.begin`.

    ``QUARANTINE`` comes in two forms: ``settle`` false — the batch is done, its ``quarantined``
    recipients failed with ``reason``; ``settle`` true — this execution owns the batch (``phones``):
    settle it through status.php, record what the provider took, and end it with
    :meth:`Ledger.quarantine` (``reason``).
    """

    verdict: BeginVerdict
    #: The server's time of the decision (ms): compute due times from it, not from the worker's clock.
    now_ms: int = 0
    phones: tuple[str, ...] = ()
    settle: bool = False
    attempts: int = 0
    until_ms: int = 0
    cancelled: int = 0
    quarantined: int = 0
    reason: str = ""

    @property
    def owned(self) -> bool:
        """This execution owns the batch and must record an outcome."""
        return self.verdict is BeginVerdict.OK or (self.verdict is BeginVerdict.QUARANTINE and self.settle)


class LaunchVerdict(StrEnum):
    SEND = "send"  # the intent is written: the request may leave
    DEDUPLICATED = "deduplicated"  # the identical request left less than a minute ago
    SLOT_CLOSED = "slot_closed"  # the slot may carry no new request (error 2, back-off, quiet, lost)
    LOST = "lost"  # this execution no longer owns the batch


@dataclass(frozen=True)
class Launch:
    """The answer of :meth:`Ledger.launch`."""

    verdict: LaunchVerdict
    sending: Sending | None = None
    #: DEDUPLICATED: ms until the identical request may leave.
    wait_ms: int = 0


@dataclass(frozen=True)
class Sending:
    """The answer of :meth:`Ledger.mark_sending`; true when the request may leave."""

    ok: bool
    #: The server's time of the intent (ms).
    sent_ms: int
    #: When the request is surely over (``sent_ms + settle_margin_ms``); 0 when not ``ok``.
    settle_after_ms: int

    def __bool__(self) -> bool:
        return self.ok


@dataclass
class Outcome:
    """What one execution learned; applied by :meth:`Ledger.record` in one atomic step.

    The remaining recipients are due at the later of ``due_at_ms`` (absolute, on the server's clock,
    e.g. :attr:`Sending.settle_after_ms` or a flood guard's time) and the server's now + ``due_in_ms``
    (relative, e.g. a retry-after); at once when neither is given.
    """

    sent: int = 0
    failed: int = 0
    #: recipients that end here without a request (a number put on the stop list since the intake)
    cancelled: int = 0
    sms: int = 0
    cost_milli: int = 0
    rows: list[str] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)
    due_at_ms: int = 0
    due_in_ms: int | None = None
    settle: Settle = Settle.KEEP
    reason: str = ""

    def add_row(self, phone: str, state: str, *, msg_id: str = "", parts: int | str = "",
                cost: str = "", code: int | str = "", reason: str = "") -> None:
        clean = reason.replace(";", ",").replace("\n", " ")
        self.rows.append(f"{phone};{state};{msg_id};{parts};{cost};{code};{clean}\n")


def settle_margin_ms(*, deadline_s: float, horizon_s: float) -> int:
    """How long after a request leaves it is surely over at the provider: our hard deadline for the
    request (``SMSC_TIMEOUT``) plus the settle horizon (``SMSC_SETTLE_HORIZON``: the provider may go on
    processing a request we gave up on, and status.php lags behind acceptance)."""
    if deadline_s < 0 or horizon_s < 0:
        raise ValueError("deadline_s and horizon_s must not be negative")
    return math.ceil(deadline_s * 1000) + math.ceil(horizon_s * 1000)


def settle_after_ms(sent_ms: int, *, deadline_s: float, horizon_s: float) -> int:
    """When a request sent at ``sent_ms`` (server clock) may be settled through status.php."""
    return sent_ms + settle_margin_ms(deadline_s=deadline_s, horizon_s=horizon_s)


def server_time_ms(client: redis.Redis) -> int:
    """The Redis server's clock (ms): the one clock of every rule and lease."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000



class Ledger:
    def __init__(self, client: redis.Redis, keys: Keys, *, scripts: Scripts | None = None,
                 quarantine_after: int = QUARANTINE_AFTER, urgent_extra: int = _URGENT_EXTRA,
                 bulk_every: int = _BULK_EVERY) -> None:
        if quarantine_after < 1:
            raise ValueError("quarantine_after must be at least 1")
        if urgent_extra < 0:
            raise ValueError("urgent_extra must not be negative")
        if bulk_every < 1:
            raise ValueError("bulk_every must be at least 1")
        self.r = client
        self.keys = keys
        self.scripts = scripts or Scripts(client)
        self.quarantine_after = quarantine_after
        self.urgent_extra = urgent_extra
        self.bulk_every = bulk_every

    # -- dispatch ------------------------------------------------------------------------------
    def claim(self, *, window: int, claim_lease_ms: int, max_claim: int, now_ms: int | None = None) -> list[str]:
        """Lease up to ``max_claim`` due batches, in the order to send them (``lua/claim.lua``): settle
        first, then the urgent lane (even beyond ``window``, by at most :attr:`urgent_extra`), then the
        normal and bulk lanes by weighted fair share within the window (bulk at least 1 claim in
        :attr:`bulk_every`), then whatever no lane index held, oldest due first."""
        return [ref for ref, _ in self._claim(window, claim_lease_ms, max_claim, now_ms, lanes=False)]

    def claim_lanes(self, *, window: int, claim_lease_ms: int, max_claim: int,
                    now_ms: int | None = None) -> list[tuple[str, str]]:
        """:meth:`claim`, each batch with its campaign's lane (``urgent`` | ``normal`` | ``bulk``): the
        dispatcher can hand urgent batches to a Celery queue of their own."""
        return self._claim(window, claim_lease_ms, max_claim, now_ms, lanes=True)

    def claim_on(self, pipe: redis.client.Pipeline, *, window: int, claim_lease_ms: int, max_claim: int) -> None:
        """:meth:`claim`, queued on ``pipe`` (beside other commands, one round trip); read its reply with
        :meth:`claimed`."""
        self.scripts.claim.queue(pipe, keys=[self.keys.due, self.keys.leased, self.keys.settle_due],
                                 args=self._claim_args(window, claim_lease_ms, max_claim, None, lanes=False))

    @staticmethod
    def claimed(reply: Sequence[Any]) -> list[str]:
        """The refs of a :meth:`claim_on` reply."""
        return [_s(x) for x in reply]

    def _claim_script(self, window: int, claim_lease_ms: int, max_claim: int, now_ms: int | None, *,
                      lanes: bool) -> Any:
        """``lua/claim.lua``, run: its raw reply."""
        return self.scripts.claim(keys=[self.keys.due, self.keys.leased, self.keys.settle_due],
                                  args=self._claim_args(window, claim_lease_ms, max_claim, now_ms, lanes=lanes))

    def _claim_args(self, window: int, claim_lease_ms: int, max_claim: int, now_ms: int | None, *,
                    lanes: bool) -> list[Arg]:
        return [clock_arg(now_ms), window, claim_lease_ms, max_claim, self.urgent_extra, self.bulk_every,
                "1" if lanes else ""]

    def _claim(self, window: int, claim_lease_ms: int, max_claim: int, now_ms: int | None, *,
               lanes: bool) -> list[tuple[str, str]]:
        got = self.claimed(self._claim_script(window, claim_lease_ms, max_claim, now_ms, lanes=lanes))
        if not lanes:
            return [(ref, "") for ref in got]
        return list(zip(got[0::2], got[1::2], strict=True))

    def expired_leases(self, now_ms: int | None = None, *, limit: int = 500) -> list[str]:
        """Batches whose lease has run out by ``now_ms`` (default: the server's clock), oldest first."""
        pipe = self.r.pipeline(transaction=False)
        pipe.time()
        pipe.zrangebyscore(self.keys.leased, "-inf", "+inf", start=0, num=limit, withscores=True)
        (seconds, micros), leases = pipe.execute()
        now = now_ms if now_ms is not None else int(seconds) * 1000 + int(micros) // 1000
        return [_s(ref) for ref, score in leases if score <= now]

    def sweep(self, now_ms: int | None = None, *, limit: int = 500) -> int:
        """Put back every batch whose lease ran out; returns how many went back.

        The candidates are read first (one round trip); the script decides on the server's clock."""
        refs = self.expired_leases(now_ms, limit=limit)
        if not refs:
            return 0
        k = self.keys
        n, _ = self.scripts.sweep(keys=[k.leased, k.due, *[k.batch(ref) for ref in refs]],
                                  args=[clock_arg(now_ms), *refs])
        return int(n)

    # -- one execution -------------------------------------------------------------------------
    def begin(self, ref: str, *, token: str, exec_lease_ms: int, account: str,
              now_ms: int | None = None) -> Begin:
        keys, args = self._begin_call(ref, token, exec_lease_ms, account, now_ms)
        return self.begun(self.scripts.begin(keys=keys, args=args))

    def begin_on(self, pipe: redis.client.Pipeline, ref: str, *, token: str, exec_lease_ms: int,
                 account: str) -> None:
        """:meth:`begin`, queued on ``pipe`` (run it with :meth:`scheduler.scripts.Scripts.execute`); read
        its reply with :meth:`begun`."""
        keys, args = self._begin_call(ref, token, exec_lease_ms, account, None)
        self.scripts.begin.queue(pipe, keys=keys, args=args)

    def _begin_call(self, ref: str, token: str, exec_lease_ms: int, account: str,
                    now_ms: int | None) -> tuple[list[str], list[Arg]]:
        cid, _ = split_ref(ref)
        k = self.keys
        return ([k.batch(ref), k.leased, k.due, k.campaign(cid), k.account(account), k.parked(cid)],
                [clock_arg(now_ms), ref, token, exec_lease_ms, self.quarantine_after])

    @staticmethod
    def begun(res: Sequence[Any]) -> Begin:
        verdict = BeginVerdict(_s(res[0]))
        now = int(res[1])
        if verdict is BeginVerdict.OK:
            return Begin(verdict, now, _phones(res[2]), _s(res[3]) == "1", int(res[4]))
        if verdict is BeginVerdict.DEFERRED:
            return Begin(verdict, now, until_ms=int(res[2]))
        if verdict is BeginVerdict.CANCELLED:
            return Begin(verdict, now, cancelled=int(res[2]))
        if verdict is BeginVerdict.QUARANTINE:
            return Begin(verdict, now, _phones(res[4]), _s(res[5]) == "1", int(res[6]), quarantined=int(res[2]),
                         reason=_s(res[3]))
        return Begin(verdict, now)

    def mark_sending(self, ref: str, *, token: str, lease_ms: int, settle_margin_ms: int,
                     now_ms: int | None = None) -> Sending:
        """Record the send intent (fenced); the request may leave only when the answer is true.

        ``lease_ms``: the execution's lease from now, covering the request; ``settle_margin_ms``: see
        :func:`settle_margin_ms`."""
        ok, sent, after = self.scripts.mark_sending(keys=[self.keys.batch(ref), self.keys.leased],
                                                    args=[clock_arg(now_ms), ref, token, settle_margin_ms, lease_ms])
        return Sending(bool(int(ok)), int(sent), int(after))

    def launch(self, ref: str, *, token: str, login: str, fingerprint: str, slot_lease_ms: int, lease_ms: int,
               settle_margin_ms: int, window_ms: int = 60_000, now_ms: int | None = None) -> Launch:
        """The last step before a send request leaves, in one round trip (``lua/launch.lua``): the
        request dedup (:meth:`scheduler.guards.Guards.claim_send_request`), the slot's last check
        (:meth:`~scheduler.guards.Guards.renew_slot`) and the send intent (:meth:`mark_sending`), each
        deciding as it does alone; nothing is written unless the request may leave."""
        k = self.keys
        reply = self.scripts.launch(
            keys=[k.send_request(login, fingerprint), k.inflight(login), k.probe(login), k.status_inflight(login),
                  k.revoked(login), k.account(login), k.batch(ref), k.leased],
            args=[clock_arg(now_ms), token, ref, window_ms, slot_lease_ms, settle_margin_ms, lease_ms])
        verdict = int(reply[0])
        if verdict == 1:
            return Launch(LaunchVerdict.SEND, Sending(True, int(reply[1]), int(reply[2])))
        if verdict == 2:
            return Launch(LaunchVerdict.DEDUPLICATED, wait_ms=int(reply[1]))
        return Launch(LaunchVerdict.SLOT_CLOSED if verdict == 3 else LaunchVerdict.LOST)

    def record(self, ref: str, *, token: str, outcome: Outcome, now_ms: int | None = None,
               quarantine: str = "") -> tuple[bool, str]:
        """Apply the outcome (fenced); ``(False, "")`` when this execution no longer owns the batch."""
        return self.recorded(self._record(ref, token, outcome, now_ms, quarantine))

    def record_on(self, pipe: redis.client.Pipeline, ref: str, *, token: str, outcome: Outcome) -> None:
        """:meth:`record`, queued on ``pipe`` (run it with :meth:`scheduler.scripts.Scripts.execute`); read
        its reply with :meth:`recorded`."""
        self._record(ref, token, outcome, None, "", pipe=pipe)

    @staticmethod
    def recorded(reply: Sequence[Any]) -> tuple[bool, str]:
        ok, state = reply
        return bool(int(ok)), _s(state)

    def _record(self, ref: str, token: str, outcome: Outcome, now_ms: int | None, quarantine: str, *,
                pipe: redis.client.Pipeline | None = None) -> Any:
        cid, _ = split_ref(ref)
        k = self.keys
        keys = [k.batch(ref), k.leased, k.due, k.campaign(cid), k.settle_due]
        args = [clock_arg(now_ms), ref, token, outcome.sent, outcome.failed, outcome.sms, outcome.cost_milli,
                "".join(outcome.rows), ",".join(outcome.remaining), outcome.due_at_ms or "",
                "" if outcome.due_in_ms is None else outcome.due_in_ms, Settle(outcome.settle).value,
                outcome.reason[:300], _one_line(quarantine)[:500], outcome.cancelled]
        if pipe is not None:
            self.scripts.record.queue(pipe, keys=keys, args=args)
            return None
        return self.scripts.record(keys=keys, args=args)

    def texts(self, ref: str) -> tuple[dict[str, str], dict[str, str]]:
        """A personal batch's own texts and senders by phone (``{}`` each for a campaign of one text)."""
        return self.texts_of(self.r.hmget(self.keys.batch(ref), ["texts", "senders"]))

    def texts_on(self, pipe: redis.client.Pipeline, ref: str) -> None:
        """:meth:`texts`, queued on ``pipe``; read its reply with :meth:`texts_of`."""
        pipe.hmget(self.keys.batch(ref), ["texts", "senders"])

    @staticmethod
    def texts_of(raw: Sequence[Any]) -> tuple[dict[str, str], dict[str, str]]:
        return (json.loads(_s(raw[0])) if raw[0] else {}), (json.loads(_s(raw[1])) if raw[1] else {})

    def release(self, ref: str, *, token: str, phones: Sequence[str], due_at_ms: int = 0,
                due_in_ms: int | None = None, settle: Settle = Settle.KEEP, reason: str = "",
                now_ms: int | None = None) -> bool:
        """Put the batch back, unchanged, for a later attempt."""
        ok, _ = self.record(ref, token=token, now_ms=now_ms,
                            outcome=Outcome(remaining=list(phones), due_at_ms=due_at_ms, due_in_ms=due_in_ms,
                                            settle=settle, reason=reason))
        return ok

    def quarantine(self, ref: str, *, token: str, reason: str, outcome: Outcome | None = None,
                   now_ms: int | None = None) -> tuple[bool, str]:
        """End a batch that :meth:`begin` answered ``QUARANTINE`` with ``settle`` (after settling it):
        what ``outcome`` records as sent is counted, and every recipient in ``outcome.remaining`` fails
        with ``reason`` (counted in the campaign's ``failed`` and ``quarantined``). Fenced like
        :meth:`record`."""
        out = outcome if outcome is not None else Outcome()
        if not reason:
            raise ValueError("a quarantine needs its reason")
        return self.record(ref, token=token, outcome=out, now_ms=now_ms, quarantine=reason)

    def note_error(self, ref: str, *, reason: str) -> None:
        """Keep the error that ended an execution without an outcome (an exception outside the
        classified errors): a quarantine cites the last one. Informational, so not fenced; the
        next recorded outcome clears it. Never pass a secret: it is stored and shown."""
        self.r.hset(self.keys.batch(ref), "last_error", _one_line(reason)[:300])

    # -- recovery after a Redis restart (scheduler.recovery) -------------------------------------
    def recover(self, refs: Sequence[str], *, settle_margin_ms: int, horizon_ms: int = 1_000,
                now_ms: int | None = None) -> int:
        """Mark each of ``refs`` that could have been sent as 'settle first' and fence off its old
        execution; returns how many were marked. ``horizon_ms``: batches due later than the server's now
        + this cannot have been sent."""
        k = self.keys
        marked = 0
        for i in range(0, len(refs), 500):
            chunk = list(refs[i:i + 500])
            res = self.scripts.recover(keys=[k.leased, k.due, *[k.batch(ref) for ref in chunk]],
                                       args=[clock_arg(now_ms), settle_margin_ms, horizon_ms, *chunk])
            marked += int(res[0])
        return marked


def _phones(value: object) -> tuple[str, ...]:
    joined = _s(value)
    return tuple(joined.split(",")) if joined else ()


def _one_line(text: str) -> str:
    return " ".join(text.split())
