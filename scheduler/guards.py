"""The provider's rules, kept here for all workers of every namespace together (design invariant 5).

Each guard is one atomic step in Redis (a Lua script, a single ``SET NX``), never a check-then-act from
Python, and every one decides time by the Redis server's clock (invariant 9): the methods take
``now_ms=None`` (the server's clock); a value is only for tests that step time. The guards are keyed by
login (:func:`scheduler.keys.login_id`), so two deployments on one login share them.

- :meth:`Guards.admit_phones` — the subscriber flood guard (≤ 50 messages in a < 60 s chain);
- :meth:`Guards.claim_send_request` / :meth:`Guards.claim_cost_request` — one identical send per minute,
  five identical cost requests per minute;
- :meth:`Guards.claim_status_request` — status.php: five requests per message a minute, and one mass
  request a minute (the same one, or strictly any); :meth:`Guards.claim_balance_request` — ten a minute;
- :meth:`Guards.try_slot` / :meth:`Guards.renew_slot` / :meth:`Guards.slot_valid` /
  :meth:`Guards.release_slot` — the login semaphore (< 15 in flight, fewer while the provider is slow),
  closed while the account is stopped, backing off or quiet; :meth:`Guards.try_status_slot` — the
  status semaphore (< 5 status.php requests in flight), held in addition to the login slot;
- :meth:`Guards.account_outcome` — what an answer means for the whole account (back-off, stop, speed);
  :meth:`Guards.prove_credentials` — credentials proven once per credential set;
  :meth:`Guards.quiet` — no new slot until a time (after a Redis restart).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import redis

from scheduler.keys import Keys
from scheduler.keys import text as _s
from scheduler.scripts import Arg, Scripts, clock_arg

__all__ = [
    "AccountPolicy",
    "AccountState",
    "AccountStatus",
    "AccountVerdict",
    "AdaptivePolicy",
    "Answer",
    "FloodPolicy",
    "Guards",
    "SlotResult",
    "StatusPolicy",
    "Take",
    "TakeVerdict",
]

#: Wake-ups kept for slot waiters (one a released slot): no more than slots can come free at once.
_MAX_WAKEUPS = 16
#: The provider's minute, for every "so many a minute" rule.
_MINUTE_MS = 60_000
#: Identical cost requests a minute (the provider answers error 9 to the sixth).
_COST_PER_MINUTE = 5
#: balance.php requests a minute (error 9 above ten).
_BALANCE_PER_MINUTE = 10


class SlotResult(StrEnum):
    """What a slot request got."""

    #: The slot is the caller's: its request may leave.
    TAKEN = "taken"
    #: The login (or its status requests) is at its cap: wait a moment and try again.
    BUSY = "busy"
    #: The account must not send now (stopped after error 2, backing off or cooling down, quiet after a
    #: Redis restart, or an error 2 came since the login slot was taken): give the batch back.
    CLOSED = "closed"
    #: The caller's login slot is gone (its lease ran out, or it was released): send nothing.
    LOST = "lost"


class Answer(StrEnum):
    """What came back from one request, as far as the whole account is concerned."""

    #: A good answer (a sent batch, a status, a balance).
    OK = "ok"
    #: No answer in time, or a cut one (a timeout, a reset): not the provider's error, so it never
    #: counts toward the error streak; it lowers the login's adaptive cap.
    UNKNOWN = "unknown"
    #: An error answer of the provider: counted toward its 100-errors-in-a-row block.
    ERROR = "error"
    #: Error 4 (the IP is blocked for a while): the whole account backs off at once.
    BLOCK = "block"
    #: Error 2 (login, password or IP refused): the account stops at once.
    AUTH = "auth"


class AccountStatus(StrEnum):
    OK = "ok"
    #: Too many errors in a row: no request until the cool-down ends.
    COOLDOWN = "cooldown"
    #: Error 2: no request until the operator's resume.
    STOPPED = "stopped"


@dataclass(frozen=True)
class FloodPolicy:
    #: The provider's rule: 50 messages to one subscriber in an unbroken chain.
    limit: int = 50
    #: A chain breaks after a 60 s gap; the extra 2 s cover the request's travel to the provider, so
    #: that the provider, which measures arrival times, never sees a shorter gap than we did.
    gap_ms: int = 62_000


@dataclass(frozen=True)
class AccountPolicy:
    #: First account-wide wait after error 4 (and after a streak of errors); doubles each time.
    base_backoff_ms: int = 30_000
    max_backoff_ms: int = 600_000
    #: The provider's error answers in a row before the whole account backs off.
    errors_before_backoff: int = 3
    #: Errors in a row after which the account cools down — far below the provider's 100-in-a-row block.
    stop_after: int = 20
    cooldown_ms: int = 600_000


@dataclass(frozen=True)
class AdaptivePolicy:
    """How a slow provider slows the login down (AIMD, as TCP does): while at least ``slow_share`` of the
    recent answers were slow or missing, each slow answer or unknown outcome multiplies the login's
    adaptive cap by ``decrease`` (floor 1, at most once per ``hold_ms``); each fast answer adds ``1 / cap``
    (one slot back per cap's worth of fast answers), up to ``max_cap``.

    A late answer now and then does not slow the login: its slot is spent already, and fewer requests in
    flight would only cost the fast ones (with one answer in five late, the login keeps its cap)."""

    #: The configured cap (``SMSC_CONCURRENCY``): the adaptive cap's ceiling.
    max_cap: int = 14
    #: A good answer this slow counts as slow: a healthy provider answers a 500-number list in well
    #: under a second, so 10 s is a provider in trouble (the default timeout is 30 s).
    slow_answer_ms: int = 10_000
    decrease: float = 0.5
    #: After a decrease, slow answers within this long do not decrease again: they answer requests
    #: sent before it. One request timeout (the default ``SMSC_TIMEOUT``) covers them.
    hold_ms: int = 30_000
    #: The share of recent answers, slow or missing, from which the provider counts as in trouble.
    slow_share: float = 0.5
    #: One answer's weight in that share (a moving average over about the last ten answers).
    share_weight: float = 0.1


@dataclass(frozen=True)
class StatusPolicy:
    #: status.php requests in flight per login: the provider answers error 9 at five at once.
    concurrency: int = 4
    #: Requests about one message (id + phone) a minute: error 9 above five.
    per_message: int = 5
    #: "More than one mass request a minute" read strictly: one mass request a minute per login,
    #: whatever it asks. Otherwise (the default) the same mass request at most once a minute.
    strict_mass: bool = False


class TakeVerdict(StrEnum):
    """What :meth:`Guards.take` did. BUSY and CLOSED took nothing; every other one holds the slot."""

    BUSY = "busy"  # every slot in use: wait for one (Guards.wait_for_slot)
    CLOSED = "closed"  # the account must not send now
    SEND = "send"  # every recipient admitted, the dedup set, the intent written: POST now
    DEDUPLICATED = "deduplicated"  # the identical request left less than a minute ago
    LOST = "lost"  # the execution no longer owns the batch
    SCREENED = "screened"  # some recipient stop-listed or held: build the request again for the rest


@dataclass(frozen=True)
class Take:
    verdict: TakeVerdict
    sent_ms: int = 0
    settle_after_ms: int = 0
    wait_ms: int = 0
    #: SCREENED: per recipient, stop-listed; and 0 (admitted, counted) or the time it may be sent from.
    stopped: list[bool] = field(default_factory=list)
    waits: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class AccountVerdict:
    state: AccountStatus
    backoff_until_ms: int
    errors_in_a_row: int
    #: The login's adaptive cap, ``None`` while the provider has never been slow (the configured cap).
    adaptive_cap: float | None


@dataclass(frozen=True)
class AccountState:
    """The login's account state, as ``status`` shows it."""

    state: AccountStatus
    reason: str
    backoff_until_ms: int
    errors_in_a_row: int
    #: The account had a good answer since its last error 2 (until then the semaphore's cap is 1).
    verified: bool
    adaptive_cap: float | None
    slow_answers: int
    quiet_until_ms: int
    last_error: str

    @classmethod
    def from_hash(cls, raw: Mapping[str, str]) -> AccountState:
        cap = raw.get("adaptive_cap")
        return cls(state=AccountStatus(raw.get("state") or "ok"), reason=raw.get("reason", ""),
                   backoff_until_ms=int(raw.get("backoff_until") or 0),
                   errors_in_a_row=int(raw.get("errors_in_a_row") or 0), verified=raw.get("verified") == "1",
                   adaptive_cap=float(cap) if cap else None, slow_answers=int(raw.get("slow_answers") or 0),
                   quiet_until_ms=int(raw.get("quiet_until") or 0), last_error=raw.get("last_error", ""))


_SLOT_RESULTS = {1: SlotResult.TAKEN, 0: SlotResult.BUSY, -1: SlotResult.CLOSED, -2: SlotResult.LOST}


def _digits(phone: str) -> str:
    """One subscriber, however the number is written (``+7…`` and ``7…``): its digits."""
    if phone.isdigit() and phone.isascii():  # as the intake stores it
        return phone
    return "".join(c for c in phone if c.isdigit())



class Guards:
    def __init__(self, client: redis.Redis, keys: Keys, *, scripts: Scripts | None = None,
                 flood: FloodPolicy | None = None, account_policy: AccountPolicy | None = None,
                 adaptive: AdaptivePolicy | None = None, status: StatusPolicy | None = None) -> None:
        self.r = client
        self.keys = keys
        self.scripts = scripts or Scripts(client)
        self.flood_policy = flood or FloodPolicy()
        self.account_policy = account_policy or AccountPolicy()
        self.adaptive_policy = adaptive or AdaptivePolicy()
        self.status_policy = status or StatusPolicy()

    # -- flood -----------------------------------------------------------------------------------
    def admit_phones(self, login: str, phones: Sequence[str], now_ms: int | None = None) -> list[int]:
        """Per phone: 0 if admitted now (and counted), else the server time (ms) it may be sent from."""
        if not phones:
            return []
        out = self.scripts.flood(keys=self._flood_keys(login, phones),
                                 args=[clock_arg(now_ms), self.flood_policy.limit, self.flood_policy.gap_ms])
        return [int(x) for x in out]

    def take(self, login: str, token: str, *, lease_ms: int, cap: int, probe: bool, ref: str, fingerprint: str,
             phones: Sequence[str], stop_key: str, stop_fields: Sequence[str], exec_lease_ms: int,
             settle_margin_ms: int, window_ms: int = _MINUTE_MS, now_ms: int | None = None) -> Take:
        """A login slot and, with it, the whole way to the POST in one round trip (``lua/take.lua``): the
        slot (:meth:`try_slot`), the stop list and the flood guard for ``phones`` (:meth:`admit_phones`),
        then — every one admitted, none stopped — the request dedup (:meth:`claim_send_request`) and the
        batch's send intent (:meth:`scheduler.ledger.Ledger.mark_sending`), each deciding as it does
        alone. ``fingerprint``: the request built for all of ``phones``; ``stop_fields``: their stop-list
        fields (:meth:`scheduler.stoplist.StopList.key_of`)."""
        k = self.keys
        reply = self.scripts.take(
            keys=[k.inflight(login), k.account(login), k.probe(login), k.revoked(login), stop_key,
                  k.send_request(login, fingerprint), k.batch(ref), k.leased, *self._flood_keys(login, phones)],
            args=[clock_arg(now_ms), token, lease_ms, cap, "1" if probe else "0", ref, window_ms, settle_margin_ms,
                  exec_lease_ms, self.flood_policy.limit, self.flood_policy.gap_ms, *stop_fields])
        code = int(reply[0])
        if code == 0:
            return Take(TakeVerdict.BUSY)
        if code == -1:
            return Take(TakeVerdict.CLOSED)
        if code == 1:
            return Take(TakeVerdict.SEND, sent_ms=int(reply[1]), settle_after_ms=int(reply[2]))
        if code == 2:
            return Take(TakeVerdict.DEDUPLICATED, wait_ms=int(reply[1]))
        if code == 3:
            return Take(TakeVerdict.LOST)
        n = len(phones)
        return Take(TakeVerdict.SCREENED, stopped=[int(x) == 1 for x in reply[1:1 + n]],
                    waits=[int(x) for x in reply[1 + n:1 + 2 * n]])

    def admit_phones_on(self, pipe: redis.client.Pipeline, login: str, phones: Sequence[str]) -> None:
        """:meth:`admit_phones` (``phones`` not empty), queued on ``pipe`` (run it with
        :meth:`scheduler.scripts.Scripts.execute`); its reply, read with :meth:`admitted`."""
        self.scripts.flood.queue(pipe, keys=self._flood_keys(login, phones),
                                 args=[clock_arg(None), self.flood_policy.limit, self.flood_policy.gap_ms])

    def _flood_keys(self, login: str, phones: Sequence[str]) -> list[str]:
        prefix = self.keys.flood(login, "")  # the login's flood prefix once, not a key built per phone
        return [prefix + _digits(p) for p in phones]

    @staticmethod
    def admitted(reply: Sequence[Any]) -> list[int]:
        return [int(x) for x in reply]

    # -- request limits --------------------------------------------------------------------------
    def claim_send_request(self, login: str, fingerprint: str, *, window_ms: int = _MINUTE_MS) -> int:
        """0 if this identical send request may leave now; else ms to wait until it may. (The window is
        the key's TTL: the server's clock.)"""
        key = self.keys.send_request(login, fingerprint)
        if self.r.set(key, b"1", nx=True, px=window_ms):
            return 0
        return max(int(self.r.pttl(key)), 1)

    def forget_send_request(self, login: str, fingerprint: str) -> None:
        """The request was refused before the provider took it (connect error): it may go again."""
        self.r.delete(self.keys.send_request(login, fingerprint))

    def claim_cost_request(self, login: str, fingerprint: str, *, window_ms: int = _MINUTE_MS,
                           now_ms: int | None = None) -> int:
        """0 if one more identical cost request may leave now (five a minute); else ms to wait."""
        return self._rate({self.keys.cost_request(login, fingerprint): _COST_PER_MINUTE}, window_ms, now_ms)

    def claim_status_request(self, login: str, pairs: Sequence[tuple[str, str]], *,
                             window_ms: int = _MINUTE_MS, now_ms: int | None = None) -> int:
        """0 if this status.php request (``(phone, id)`` pairs) may leave now, and it is counted; else ms
        to wait (nothing counted).

        The provider answers error 9 to more than five requests about one message a minute (a message
        asked within a mass request counts too) and to more than one mass request a minute: the same
        pairs again, or, with :attr:`StatusPolicy.strict_mass`, any mass request of the login."""
        if not pairs:
            raise ValueError("a status request asks about at least one message")
        limits = {self.keys.status_message(login, msg_id, _digits(phone)): self.status_policy.per_message
                  for phone, msg_id in pairs}
        if len(pairs) > 1:
            digest = hashlib.sha256("\n".join(f"{p},{i}" for p, i in pairs).encode()).hexdigest()
            limits[self.keys.status_mass(login, digest)] = 1
            if self.status_policy.strict_mass:
                limits[self.keys.status_mass_any(login)] = 1
        return self._rate(limits, window_ms, now_ms)

    def claim_balance_request(self, login: str, *, window_ms: int = _MINUTE_MS, now_ms: int | None = None) -> int:
        """0 if one more balance.php request may leave now (ten a minute); else ms to wait."""
        return self._rate({self.keys.balance_requests(login): _BALANCE_PER_MINUTE}, window_ms, now_ms)

    def _rate(self, limits: Mapping[str, int], window_ms: int, now_ms: int | None) -> int:
        return int(self.scripts.rate(keys=list(limits), args=[clock_arg(now_ms), window_ms, *limits.values()]))

    # -- login semaphore -------------------------------------------------------------------------
    def try_slot(self, login: str, token: str, *, lease_ms: int, cap: int | None = None, probe: bool = False,
                 now_ms: int | None = None) -> SlotResult:
        """Take one of the login's slots: ``TAKEN``, ``BUSY`` (at the cap: :meth:`wait_for_slot`) or
        ``CLOSED`` (stopped, backing off, cooling down or quiet: give the batch back without a request).

        ``cap``: the configured cap (default :attr:`AdaptivePolicy.max_cap`); the semaphore uses the
        smaller of it and the login's adaptive cap. ``probe``: the caller's credentials are not proven
        (:meth:`credentials_proven`); such requests go out one at a time for the whole login, so a
        wrong password is refused once, not once per slot. Renew the lease while the slot is held
        (:meth:`renew_slot`)."""
        k = self.keys
        res = self.scripts.acquire(
            keys=[k.inflight(login), k.account(login), k.probe(login), k.revoked(login)],
            args=[token, clock_arg(now_ms), lease_ms, cap if cap is not None else self.adaptive_policy.max_cap,
                  "1" if probe else "0"])
        return _SLOT_RESULTS[int(res)]

    def renew_slot(self, login: str, token: str, *, lease_ms: int, now_ms: int | None = None) -> bool:
        """Extend the slot's lease (and the token's status slot) to ``lease_ms`` from now. False when
        the slot was lost (its lease ran out) or may carry no new request (an error 2 came since it
        was taken, or the account is stopped, backing off or quiet): send nothing more with it. A
        request already out keeps its slot counted until it is released."""
        return self._hold(login, token, str(int(lease_ms)), now_ms) == 1

    def slot_valid(self, login: str, token: str, *, now_ms: int | None = None) -> bool:
        """Whether the held slot may carry a request now — the last check before the POST: after the
        first error 2 (or an error 4) no new request leaves, whenever its slot was taken."""
        return self._hold(login, token, "", now_ms) == 1

    def _hold(self, login: str, token: str, lease_ms: str, now_ms: int | None) -> int:
        k = self.keys
        return int(self.scripts.hold(
            keys=[k.inflight(login), k.probe(login), k.status_inflight(login), k.revoked(login), k.account(login)],
            args=[token, clock_arg(now_ms), lease_ms]))

    def release_slot(self, login: str, token: str) -> None:
        """Give the slot back (and the token's status slot) and wake one execution waiting for it
        (:meth:`wait_for_slot`)."""
        k = self.keys
        freed = k.slot_freed(login)
        pipe = self.r.pipeline(transaction=False)
        pipe.zrem(k.inflight(login), token)
        pipe.zrem(k.probe(login), token)
        pipe.zrem(k.status_inflight(login), token)
        # A wake-up is only a hint (the semaphore's ZSET stays the truth): unclaimed ones are capped, so
        # a waiter that finds a stale one just tries once more.
        pipe.lpush(freed, b"1")
        pipe.ltrim(freed, 0, _MAX_WAKEUPS - 1)
        pipe.pexpire(freed, 60_000)
        pipe.execute()

    def wait_for_slot(self, login: str, timeout_s: float) -> bool:
        """Block until a slot of the login was given back or ``timeout_s`` passed (True: try again now).

        Redis serves blocked clients first come, first served, so the execution that has waited longest
        is woken first, at once — not at its next poll, while a newcomer takes the slot. A slot freed
        by an expired lease wakes nobody: the timeout covers it."""
        return self.r.blpop([self.keys.slot_freed(login)], timeout=max(timeout_s, 0.001)) is not None

    def slots_in_use(self, login: str, now_ms: int | None = None) -> int:
        """Login slots whose lease has not run out."""
        if now_ms is None:
            seconds, micros = self.r.time()
            now_ms = seconds * 1000 + micros // 1000
        return int(self.r.zcount(self.keys.inflight(login), now_ms + 1, "+inf"))

    # -- status semaphore ------------------------------------------------------------------------
    def try_status_slot(self, login: str, token: str, *, lease_ms: int, now_ms: int | None = None) -> SlotResult:
        """Take a status slot for the holder of login slot ``token``: ``TAKEN``; ``BUSY`` (four status
        requests in flight: try again in a moment); ``CLOSED`` (the account must not send now); ``LOST``
        (the login slot is gone). Release it when the answer is in (:meth:`release_status_slot`)."""
        k = self.keys
        res = self.scripts.status_slot(
            keys=[k.inflight(login), k.revoked(login), k.account(login), k.status_inflight(login)],
            args=[token, clock_arg(now_ms), lease_ms, self.status_policy.concurrency])
        return _SLOT_RESULTS[int(res)]

    def release_status_slot(self, login: str, token: str) -> None:
        self.r.zrem(self.keys.status_inflight(login), token)

    # -- account ---------------------------------------------------------------------------------
    def account_outcome(self, login: str, outcome: Answer | str, *, now_ms: int | None = None, reason: str = "",
                        base_backoff_ms: int | None = None, latency_ms: int | None = None) -> AccountVerdict:
        """Apply one request's outcome to the account (see :class:`Answer`). ``latency_ms``: how long a
        good answer took (the caller's monotonic clock: a duration, not a time); a slow one lowers the
        adaptive cap as an unknown outcome does."""
        return self.account_verdict(self._account(login, outcome, now_ms=now_ms, reason=reason,
                                                  base_backoff_ms=base_backoff_ms, latency_ms=latency_ms))

    def account_outcome_on(self, pipe: redis.client.Pipeline, login: str, outcome: Answer | str, *,
                           latency_ms: int | None = None) -> None:
        """:meth:`account_outcome`, queued on ``pipe`` (one round trip with what else it carries: run it with
        :meth:`scheduler.scripts.Scripts.execute`); its reply, read with :meth:`account_verdict`."""
        k = self.keys
        self.scripts.account.queue(pipe, keys=[k.account(login), k.inflight(login), k.revoked(login)],
                                   args=self._account_args(login, outcome, None, "", None, latency_ms))

    @staticmethod
    def account_verdict(reply: Sequence[Any]) -> AccountVerdict:
        state, until, streak, cap = reply
        return AccountVerdict(AccountStatus(_s(state)), int(_s(until)), int(_s(streak)),
                              float(_s(cap)) if _s(cap) else None)

    def _account(self, login: str, outcome: Answer | str, *, now_ms: int | None = None, reason: str = "",
                 base_backoff_ms: int | None = None, latency_ms: int | None = None) -> Sequence[Any]:
        k = self.keys
        return self.scripts.account(keys=[k.account(login), k.inflight(login), k.revoked(login)],
                                    args=self._account_args(login, outcome, now_ms, reason, base_backoff_ms,
                                                            latency_ms))

    def _account_args(self, login: str, outcome: Answer | str, now_ms: int | None, reason: str,
                      base_backoff_ms: int | None, latency_ms: int | None) -> list[Arg]:
        p, a = self.account_policy, self.adaptive_policy
        return [Answer(outcome).value, clock_arg(now_ms), reason[:300], base_backoff_ms or p.base_backoff_ms,
                p.max_backoff_ms, p.stop_after, p.cooldown_ms, p.errors_before_backoff,
                "" if latency_ms is None else int(latency_ms), a.slow_answer_ms, a.max_cap, a.decrease,
                a.hold_ms, a.slow_share, a.share_weight]

    def account_state(self, login: str) -> AccountState:
        raw = self.r.hgetall(self.keys.account(login))
        return AccountState.from_hash({_s(k): _s(v) for k, v in raw.items()})

    def reset_account(self, login: str) -> None:
        """An operator's resume: clear a stop, a cool-down and a back-off (credentials must be proven
        again by one request before the full concurrency returns; slots revoked by the error 2 stay
        revoked)."""
        key = self.keys.account(login)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(key, mapping={"state": "ok", "backoff_until": "0", "errors_in_a_row": "0", "level": "0"})
        pipe.hdel(key, "reason")
        pipe.execute()

    def credentials_proven(self, login: str, fingerprint: str) -> bool:
        """Whether the provider accepted these credentials (their fingerprint) since the last error 2:
        then the caller may use the full cap at once; otherwise it sends as a probe."""
        stored = self.r.hget(self.keys.account(login), "proven_fp")
        return stored is not None and _s(stored) == fingerprint

    def prove_credentials(self, login: str, fingerprint: str) -> bool:
        """Remember the fingerprint (a salted slow hash, never the secret) of credentials the provider
        just accepted. False when refused: the account was stopped by an error 2 since."""
        return bool(self.scripts.prove(keys=[self.keys.account(login)], args=[fingerprint]))

    def quiet(self, login: str, until_ms: int) -> int:
        """No new slot for the login before ``until_ms`` (server clock), e.g. after a Redis restart while
        requests sent before it may still be in flight. Never shortens a quiet; returns the one in effect."""
        return int(self.scripts.quiet(keys=[self.keys.account(login)], args=[int(until_ms)]))
