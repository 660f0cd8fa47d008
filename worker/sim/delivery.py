"""What happens to a message after the provider took it: the simulator's delivery model (no I/O).

Every accepted message gets a final status after a delay, both drawn once from the config and fixed by
(seed, message id, phone), so the truth never depends on who asks, when or how often — a test can read
it back (:meth:`DeliveryConfig.truth`, ``GET /_sim/truth``) and compare with what the worker recorded:

- the final status by ``rates`` (status code -> share: ``1`` delivered, ``3`` expired, ``20`` cannot be
  delivered, ``22`` invalid number, ``23`` prohibited, ``25`` unreachable ...); the share left over stays
  ``0`` ("handed to the operator") for ever — the messages that are never final;
- its delivery error code (``err``) from :data:`ERRORS_BY_STATUS` (delivered and read: 0);
- the delay from acceptance to the final status: log-normal with median ``delay_s`` and shape
  ``spread`` (σ of the logarithm), at most ``max_delay_s`` — most messages are final in seconds, a few
  take much longer, like real delivery receipts.

Until its final time a message is at status ``0`` (its last change is its acceptance). A message the
flood rule held back is ``20`` at once, as before (see :mod:`worker.sim.core`).

Push (``push_url``): the provider posts each status change to the client's handler
(:mod:`worker.sim.push`), and retries a handler that is down; the fields are in :func:`push_fields`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Final, NamedTuple

__all__ = ["ERRORS_BY_STATUS", "FINAL_STATUSES", "DeliveryConfig", "Truth", "push_fields", "push_signature"]

#: Statuses that never change again (``0`` and ``-1`` are on the way).
FINAL_STATUSES: Final = frozenset({-2, 1, 2, 3, 4, 20, 22, 23, 24, 25})
#: The delivery error codes a failed status is drawn with (the provider's ``err`` table).
ERRORS_BY_STATUS: Final[Mapping[int, tuple[int, ...]]] = {
    1: (0,),
    2: (0,),
    3: (0, 6, 237, 240),  # expired: the phone was off, not in the network, not answering, busy
    20: (1, 6, 11, 13, 21, 240, 248, 253, 255),
    22: (1, 249),
    23: (244, 250, 252, 253),
    24: (0,),
    25: (6, 237, 248),
    -2: (0,),
}
_MSK_OFFSET_S: Final = 3 * 3600  # ``ts`` is written in Moscow time, like status.php's last_date
_NORMAL: Final = NormalDist()


def _default_rates() -> dict[int, float]:
    return {1: 0.85, 3: 0.04, 20: 0.05, 22: 0.01, 23: 0.01, 25: 0.02}  # 0.02 never final


class Truth(NamedTuple):
    """What the provider knows of one message: its final ``status`` (0 = never final), ``err`` and
    ``final_ms`` (0 when never final)."""

    status: int
    err: int
    final_ms: int


@dataclass(frozen=True)
class DeliveryConfig:
    """The delivery model and the push to the client's handler (flags ``--delivery-*``, ``--push-*``).

    - ``enabled``: off (the default) keeps the old answers: status 1 at once (20 for a flood-held one).
    - ``rates``, ``delay_s``, ``spread``, ``max_delay_s``: see the module docstring.
    - ``push_url``: the handler's URL (``None``: no push). ``push_intermediate`` also posts the ``0``
      of each accepted message. A post that fails (no connection, a timeout of ``push_timeout_s``, an
      answer other than 2xx) is retried after ``push_retry_s``, doubling up to ``push_retry_cap_s``,
      until ``push_give_up_s`` after its first attempt (then counted ``push_dropped``).
      ``push_concurrency`` posts are in flight at once.
    """

    enabled: bool = False
    rates: Mapping[int, float] = field(default_factory=_default_rates)
    delay_s: float = 5.0
    spread: float = 1.0
    max_delay_s: float = 3600.0
    push_url: str | None = None
    push_intermediate: bool = False
    push_retry_s: float = 60.0
    push_retry_cap_s: float = 3600.0
    push_give_up_s: float = 86_400.0
    push_timeout_s: float = 5.0
    push_concurrency: int = 4

    def __post_init__(self) -> None:
        rates = {int(k): float(v) for k, v in dict(self.rates).items()}
        object.__setattr__(self, "rates", dict(sorted(rates.items())))
        for code, rate in rates.items():
            if code not in FINAL_STATUSES:
                raise ValueError(f"delivery rates: {code} is not a final status ({sorted(FINAL_STATUSES)})")
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"delivery rates[{code}] must be a probability 0..1, got {rate}")
        if sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError("delivery rates add up to more than 1")
        for name in ("delay_s", "spread", "max_delay_s", "push_retry_s", "push_retry_cap_s", "push_give_up_s",
                     "push_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
                raise ValueError(f"delivery {name} must be a number >= 0, got {value!r}")
        if self.push_timeout_s <= 0:
            raise ValueError("delivery push_timeout_s must be > 0")
        if not isinstance(self.push_concurrency, int) or not 1 <= self.push_concurrency <= 64:
            raise ValueError("delivery push_concurrency must be 1..64")
        if self.push_url is not None and not self.push_url.startswith(("http://", "https://")):
            raise ValueError(f"delivery push_url must be an http(s) URL, got {self.push_url!r}")
        for name in ("enabled", "push_intermediate"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"delivery {name} must be true or false")

    def replace(self, changes: Mapping[str, Any]) -> DeliveryConfig:
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown delivery field(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **dict(changes))

    def public(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["rates"] = {str(k): v for k, v in self.rates.items()}
        return out

    def truth(self, seed: int | None, message_id: str, phone: str, accepted_ms: int) -> Truth:
        """The fate of the message ``message_id`` to ``phone`` (digits as recorded) accepted at ``accepted_ms``."""
        digest = hashlib.sha256(f"{seed}|{message_id}|{phone}".encode()).digest()
        u1, u2, u3 = (int.from_bytes(digest[i:i + 6], "big") / float(1 << 48) for i in (0, 6, 12))
        status = 0
        acc = 0.0
        for code, rate in self.rates.items():
            acc += rate
            if u1 < acc:
                status = code
                break
        if status == 0:
            return Truth(0, 0, 0)
        errs = ERRORS_BY_STATUS.get(status, (0,))
        err = errs[min(int(u3 * len(errs)), len(errs) - 1)]
        z = _NORMAL.inv_cdf(min(max(u2, 1e-12), 1 - 1e-12))
        delay_s = min(self.delay_s * math.exp(self.spread * z), self.max_delay_s)
        return Truth(status, err, accepted_ms + max(int(delay_s * 1000), 1))

    def status_at(self, seed: int | None, message_id: str, phone: str, accepted_ms: int,
                  now_ms: int) -> tuple[int, int, int]:
        """``(status, err, last_change_ms)`` as status.php answers it at ``now_ms``."""
        t = self.truth(seed, message_id, phone, accepted_ms)
        if t.status and now_ms >= t.final_ms:
            return t.status, t.err, t.final_ms
        return 0, 0, accepted_ms


def push_signature(message_id: str, phone: str, status: int, password: str) -> str:
    """The ``md5`` field of a status post: MD5 of ``id:phone:status:password`` (see docs/delivery.md for
    where this reading comes from and what it rests on)."""
    text = f"{message_id}:{phone}:{status}:{password}"
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def push_fields(*, message_id: str, phone: str, status: int, err: int, changed_ms: int, parts: int,
                password: str) -> dict[str, str]:
    """The form fields of one status post to the client's handler, as the provider sends them."""
    ts = changed_ms // 1000
    return {
        "id": message_id,
        "phone": phone,
        "status": str(status),
        "err": str(err),
        "time": str(ts),
        "ts": time.strftime("%d.%m.%Y %H:%M:%S", time.gmtime(ts + _MSK_OFFSET_S)),
        "cnt": str(parts),
        "type": "0",  # SMS
        "md5": push_signature(message_id, phone, status, password),
    }
