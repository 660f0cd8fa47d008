"""``smsc-mailer retry ID`` — a follow-up campaign of the recipients of campaign ID that failed.

    smsc-mailer retry c1                        # failed sends, and deliveries expired / undeliverable / unreachable
    smsc-mailer retry c1 --codes 8,20           # only send error 8 or delivery status 20
    smsc-mailer retry c1 --states failed,cancelled --json

What is selected and what the follow-up keeps: :mod:`worker.retry` (and docs/retry.md). Running the
same retry again after a crash answers the same follow-up; after it is linked, a recipient already in
a follow-up is not retried from the original again (retry the follow-up instead).

Exit codes: 0 a follow-up enqueued (or answered), and also when there is nothing to retry (one line;
``--json``: ``{"retried": 0, ...}``); 2 bad input, an unknown campaign, one still being enqueued, or
a follow-up the enqueue refuses (one line); 1 Redis cannot be reached. ``--json`` makes the last line
a JSON object: the follow-up's receipt, the object ``enqueue --json`` prints.

This module is registered by :mod:`worker.cli` (``cli.add_command(retry)``) and so cannot import it:
its few helpers (``_fail``, ``_settings``, ``_mask_url``, ``_money``) are repeated here.
"""

from __future__ import annotations

import json
from decimal import Decimal

import click
import redis

from worker.cli_common import fail, mask_url, settings_or_fail

__all__ = ["retry"]


_fail, _settings, _mask_url = fail, settings_or_fail, mask_url  # the shared ones (worker.cli_common)


def _money(value: str | None, flag: str) -> Decimal | None:
    if value is None:
        return None
    try:
        amount = Decimal(value.strip().replace(",", "."))
    except ArithmeticError:
        raise ValueError(f"{flag} {value!r}: give an amount such as 150 or 99.50") from None
    if not amount.is_finite() or amount <= 0:
        raise ValueError(f"{flag} {value!r}: give a positive amount")
    return amount


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


@click.command()
@click.argument("campaign_id")
@click.option("--codes", help="Only recipients whose send error code or delivery status is one of these "
                              "(the report's error_code / delivery_status), e.g. 8,20.")
@click.option("--states", help="Which outcomes to retry, e.g. failed,cancelled: failed, cancelled, or a failed "
                               "delivery state (expired, undeliverable, unreachable, invalid_number, prohibited, "
                               "no_funds, stopped, unknown). Default: failed,expired,undeliverable,unreachable.")
@click.option("--campaign-id", "new_id", help="The follow-up's id (default: ID.r1, ID.r2, ...).")
@click.option("--max-cost", help="The follow-up's budget (the original's is not copied).")
@click.option("--allow-partial/--no-allow-partial", default=None,
              help="Enqueue even if the balance does not cover the estimate (default: as the original).")
@click.option("--json", "as_json", is_flag=True, help="Last line: a JSON object (the follow-up's receipt).")
def retry(campaign_id: str, codes: str | None, states: str | None, new_id: str | None, max_cost: str | None,
          allow_partial: bool | None, as_json: bool) -> None:
    """Enqueue a follow-up campaign of the recipients of CAMPAIGN_ID that failed, each with its own text."""
    from scheduler.campaigns import CampaignError
    from worker.retry import RetryStats, parse_codes, parse_states, retry_campaign

    s = _settings()
    stats = RetryStats()
    try:
        receipt = retry_campaign(campaign_id, codes=parse_codes(codes), states=parse_states(states), settings=s,
                                 campaign_id=new_id, max_cost=_money(max_cost, "--max-cost"),
                                 allow_partial=allow_partial, stats=stats)
    except (CampaignError, ValueError) as exc:
        _fail(str(exc))
    except (redis.ConnectionError, redis.TimeoutError):
        _fail(f"cannot reach Redis at {_mask_url(s.redis_url)} (set REDIS_URL)", 1)
    left = [f"{n} already in a follow-up" for n in [stats.already_retried] if n]
    left += [f"{n} on the stop list" for n in [stats.suppressed] if n]
    if receipt is None:
        click.echo(f"campaign {campaign_id}: nothing to retry ({_plural(stats.matched, 'recipient')} matched"
                   + (f"; {', '.join(left)}" if left else "") + ")")
        if as_json:
            click.echo(json.dumps({"retried": 0, "retry_of": campaign_id, **stats.as_dict()}))
        return
    verb = "already enqueued" if receipt.existing else "enqueued"
    click.echo(f"campaign {receipt.campaign_id} {verb}: a retry of {campaign_id}, "
               f"{_plural(receipt.total, 'recipient')}, {_plural(receipt.sms_estimate, 'SMS')}, "
               f"{_plural(receipt.batches, 'batch', 'batches')}" + (f" (left out: {', '.join(left)})" if left else ""))
    if receipt.durable and not receipt.durable.startswith("on disk"):
        click.echo(f"warning: campaign {receipt.campaign_id} is queued, but it is {receipt.durable}: "
                   "a crash of Redis now may lose it", err=True)
    if as_json:
        out = receipt.as_dict()
        out["sms"] = receipt.sms_estimate
        click.echo(json.dumps(out))
    else:
        click.echo(receipt.campaign_id)

