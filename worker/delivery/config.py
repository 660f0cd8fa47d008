"""The delivery settings, read from :class:`worker.settings.Settings` (the environment is read there).

Each field falls back to its default while the settings do not have it yet, so the delivery code runs
with any settings object; the environment variables are in docs/delivery.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scheduler.delivery import DeliveryPolicy

__all__ = ["DeliveryConfig"]


@dataclass(frozen=True)
class DeliveryConfig:
    """What the poller, the push receiver and the webhook sender need (secrets as plain ``str`` here:
    held only in memory, never logged; ``repr`` hides them)."""

    #: Poll status.php (``SMSC_DELIVERY_POLL``); off: statuses come by push, with one poll at the horizon.
    poll: bool = True
    #: After this long without a final status a recipient is ``unknown`` (``SMSC_DELIVERY_HORIZON``, s).
    horizon_s: float = 86_400.0
    #: Pairs per status.php request (``SMSC_DELIVERY_CHUNK``): one batch of 500 in one request.
    chunk: int = 500
    #: Polls wait while batches are due to be sent, up to this long past their due time
    #: (``SMSC_DELIVERY_YIELD``, s; 0: never).
    yield_s: float = 300.0
    #: The poll steps after a batch was sent (s); ``None``: :class:`scheduler.delivery.DeliveryPolicy`'s.
    poll_steps_s: tuple[float, ...] | None = None
    #: A secret the handler URL ends with (``SMSC_PUSH_TOKEN``: ``https://host/smsc/status/<token>``).
    push_token: str | None = None
    #: Require the provider's ``md5`` field, checked with the account's password (``SMSC_PUSH_VERIFY``).
    push_verify: bool = False
    #: Addresses the posts may come from (``SMSC_PUSH_ALLOW_IPS``, comma-separated; empty: any).
    push_allow_ips: tuple[str, ...] = ()
    #: The account's password, for the ``md5`` check (from ``SMSC_PASSWORD``).
    password: str | None = None
    #: Default webhook of every campaign (``SMSC_WEBHOOK_URL``) and the HMAC key (``SMSC_WEBHOOK_SECRET``).
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_timeout_s: float = 10.0
    #: First retry after this long, doubling up to the cap, until given up (then kept as dead).
    webhook_retry_s: float = 5.0
    webhook_retry_cap_s: float = 600.0
    webhook_give_up_s: float = 172_800.0

    def __repr__(self) -> str:
        return (f"DeliveryConfig(poll={self.poll}, horizon_s={self.horizon_s}, chunk={self.chunk}, "
                f"webhook_url={self.webhook_url!r}, push_token={'***' if self.push_token else None})")

    @property
    def policy(self) -> DeliveryPolicy:
        if self.poll_steps_s is not None:
            return DeliveryPolicy(horizon_s=self.horizon_s, poll=self.poll, steps_s=tuple(self.poll_steps_s))
        return DeliveryPolicy(horizon_s=self.horizon_s, poll=self.poll)

    @classmethod
    def from_settings(cls, s: Any, **overrides: Any) -> DeliveryConfig:
        def get(name: str, default: Any) -> Any:
            value = getattr(s, name, None)
            return default if value is None else value

        def secret(name: str) -> str | None:
            value = getattr(s, name, None)
            if value is None:
                return None
            text = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
            return text or None

        d = cls()
        ips = get("smsc_push_allow_ips", "")
        values: dict[str, Any] = dict(
            poll=bool(get("smsc_delivery_poll", d.poll)),
            horizon_s=float(get("smsc_delivery_horizon", d.horizon_s)),
            chunk=int(get("smsc_delivery_chunk", d.chunk)),
            yield_s=float(get("smsc_delivery_yield", d.yield_s)),
            push_token=secret("smsc_push_token"),
            push_verify=bool(get("smsc_push_verify", d.push_verify)),
            push_allow_ips=tuple(ips) if isinstance(ips, list | tuple) else tuple(
                p.strip() for p in str(ips).split(",") if p.strip()),
            password=secret("smsc_password"),
            webhook_url=get("smsc_webhook_url", None) or None,
            webhook_secret=secret("smsc_webhook_secret"),
        )
        values.update(overrides)
        return cls(**values)
