"""The simulated account and the injected faults: :class:`SimConfig` (frozen; change it with ``replace``).

Every field is also a flag of ``python -m worker.sim.server`` (the field with dashes) and a key of
``POST /_sim/config``. The simulator is only as good as it is strict: wherever the real provider can be
slower, stricter or stranger, a field here makes the simulator so too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from worker.sim.delivery import DeliveryConfig

__all__ = ["SimConfig"]


@dataclass(frozen=True)
class SimConfig:
    """The simulated account and the injected faults; every rate is a probability 0..1 per request.

    Faults and account:

    - ``error_rates`` maps a provider error code (1..9) to the probability that a send request is answered
      with it instead of being accepted.
    - ``reset_rate``: the connection is closed without an answer and nothing is accepted.
    - ``http500_rate``: an HTTP 500 answer, nothing accepted.
    - ``delayed_answer_rate``: the messages are accepted and recorded at once, but the answer comes only
      after ``delayed_answer_s`` (past the client's timeout).
    - ``allowed_senders`` ``None`` accepts any well-formed sender; ``forbidden_words`` in a text answer
      error 6; ``undeliverable_prefixes`` make numbers answer error 8.

    The provider as slow, strict and strange as it can be:

    - ``slow_accept_rate`` of the send requests take ``slow_accept_s`` of processing *before* acceptance
      (on top of ``latency_ms``): the request counts as in flight meanwhile, the rules (identical request,
      flood) are judged when it is accepted, and its messages are accepted at the end even if the client
      gave up waiting (the summary's ``accepted_after_client_gone``).
    - ``status_lag_s``: status.php answers -3 for a message until this long after its acceptance.
    - ``autocorrect``: a number written without ``+`` is corrected as the provider does (``8XXXXXXXXXX``
      -> ``7XXXXXXXXXX``, ``9XXXXXXXXX`` -> ``79XXXXXXXXX``), recorded and echoed corrected; status.php
      finds the message only by the corrected spelling.
    - ``strict_mass_status``: "more than one mass status request a minute" read strictly (any two mass
      requests of a login within a minute, whatever they ask); by default only the same list twice.
    - ``status_not_found_error``: a single-message status request (no trailing comma) for a message the
      provider does not know answers error 3 "message not found", as the provider documents it, instead
      of status -3 (a list request, and a single one with the trailing comma, answer status -3).

    What becomes of a message: ``delivery`` (:class:`worker.sim.delivery.DeliveryConfig`): off by default
    (status 1 at once); on, each accepted message reaches a final status after a drawn delay, status.php
    answers it, and the provider can push the changes to a handler URL (flags ``--delivery-*``,
    ``--push-*``; in ``POST /_sim/config`` a nested object ``{"delivery": {"push_url": ...}}``).
    """

    login: str = "demo"
    password: str = field(default="demo-password", repr=False)
    apikey: str | None = field(default=None, repr=False)
    #: More logins of the provider (login -> password): sub-accounts or other brands, each with its own
    #: limits (requests in flight, identical requests, status and balance limits are all per login). The
    #: server's flag is ``--extra-login LOGIN=PASSWORD``, once per login (not ``--logins``).
    logins: Mapping[str, str] = field(default_factory=dict, repr=False)
    balance: Decimal = Decimal("1000000")
    price_per_part: Decimal = Decimal("1.50")
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    error_rates: Mapping[int, float] = field(default_factory=dict)
    http500_rate: float = 0.0
    reset_rate: float = 0.0
    delayed_answer_rate: float = 0.0
    delayed_answer_s: float = 35.0  # past the client's default 30 s timeout
    seed: int | None = None
    allowed_senders: frozenset[str] | None = None
    forbidden_words: tuple[str, ...] = ()
    undeliverable_prefixes: tuple[str, ...] = ()
    slow_accept_rate: float = 0.0
    slow_accept_s: float = 0.0
    status_lag_s: float = 0.0
    autocorrect: bool = False
    strict_mass_status: bool = False
    status_not_found_error: bool = False
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "balance", Decimal(str(self.balance)))
        object.__setattr__(self, "price_per_part", Decimal(str(self.price_per_part)))
        rates = {int(code): float(rate) for code, rate in dict(self.error_rates).items()}
        object.__setattr__(self, "error_rates", rates)
        for code, rate in rates.items():
            if not 1 <= code <= 9:
                raise ValueError(f"error_rates: code {code} is not a provider error code (1..9)")
            _check_rate(f"error_rates[{code}]", rate)
        for name in ("http500_rate", "reset_rate", "delayed_answer_rate", "slow_accept_rate"):
            _check_rate(name, float(getattr(self, name)))
        for name in ("latency_ms", "latency_jitter_ms", "delayed_answer_s", "slow_accept_s", "status_lag_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        for name in ("autocorrect", "strict_mass_status", "status_not_found_error"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.allowed_senders is not None:
            object.__setattr__(self, "allowed_senders", frozenset(self.allowed_senders))
        object.__setattr__(self, "forbidden_words", tuple(self.forbidden_words))
        object.__setattr__(self, "undeliverable_prefixes", tuple(self.undeliverable_prefixes))
        if isinstance(self.delivery, Mapping):
            object.__setattr__(self, "delivery", DeliveryConfig().replace(self.delivery))
        elif not isinstance(self.delivery, DeliveryConfig):
            raise ValueError("delivery must be a DeliveryConfig or an object of its fields")

    def replace(self, changes: Mapping[str, Any]) -> SimConfig:
        """A copy with ``changes`` applied, JSON-friendly: ``{"error_rates": {"9": 0.2}, "balance": "5"}``."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
        values = dict(changes)
        if values.get("allowed_senders") is not None:
            values["allowed_senders"] = frozenset(values["allowed_senders"])
        for name in ("forbidden_words", "undeliverable_prefixes"):
            if name in values:
                values[name] = tuple(values[name])
        if isinstance(values.get("delivery"), Mapping):  # a partial update of the delivery model
            values["delivery"] = self.delivery.replace(values["delivery"])
        try:
            return dataclasses.replace(self, **values)
        except (TypeError, ArithmeticError) as exc:
            raise ValueError(str(exc)) from exc

    def public(self) -> dict[str, Any]:
        """The config as JSON-ready data, secrets masked."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("password", "apikey"):
                value = None if value is None else "***"
            elif f.name == "logins":  # the names; their passwords masked like the main one
                value = dict.fromkeys(value, "***")
            elif isinstance(value, Decimal):
                value = str(value)
            elif isinstance(value, frozenset | tuple):
                value = sorted(value) if isinstance(value, frozenset) else list(value)
            elif f.name == "error_rates":
                value = {str(k): v for k, v in value.items()}
            elif isinstance(value, DeliveryConfig):
                value = value.public()
            out[f.name] = value
        return out


def _check_rate(name: str, rate: float) -> None:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{name} must be a probability 0..1, got {rate}")
