"""``smsc-mailer`` — the command line.

Every command prints one clear line on bad input and exits non-zero (2 for bad input or settings,
1 when Redis or the provider cannot be reached); ``--json`` makes the last printed line a JSON object.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import click
import redis

from scheduler import spreading
from scheduler.campaigns import FINAL_STATES, CampaignError, Campaigns
from scheduler.guards import Guards
from scheduler.intake import IntakeError, Rejected, iter_phones_file, iter_recipients, phone_key
from scheduler.keys import Keys
from worker.settings import ConfigError, Settings, get_settings

__all__ = ["cli", "main"]

F = TypeVar("F", bound=Callable[..., Any])


def _mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _fail(msg: str, code: int = 2) -> None:
    click.echo(f"smsc-mailer: {msg}", err=True)
    raise SystemExit(code)


def _settings() -> Settings:
    try:
        return get_settings()
    except ConfigError as exc:
        _fail(str(exc))
        raise  # unreachable


@contextmanager
def _errors(s: Settings | None = None) -> Iterator[None]:
    """Turn the expected failures into one line and an exit code."""
    try:
        yield
    except (CampaignError, IntakeError, spreading.PlanError) as exc:
        _fail(str(exc))
    except ValueError as exc:
        _fail(str(exc))
    except redis.ConnectionError:
        where = _mask_url(s.redis_url) if s else "REDIS_URL"
        _fail(f"cannot reach Redis at {where} (set REDIS_URL)", 1)


def _campaigns(s: Settings) -> Campaigns:
    from worker.runtime import redis_client

    return Campaigns(redis_client(s.redis_url), Keys(s.smsc_namespace))


def _ms(ts: int | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Bulk SMS campaigns through the SMSC HTTP API, sent by Celery workers."""


# -- enqueue --------------------------------------------------------------------------------------
def _plan_flags(f: F) -> F:
    for opt in reversed([
        click.option("--period", "period_h", type=float, help="Spread over this many hours (0.1..720)."),
        click.option("--freq", "freq_min", type=int, help="Every FREQ minutes the next group (1..1440)."),
        click.option("--at", "at", help="Start: DDMMYYhhmm, 'DD.MM.YY hh:mm', +m, 0ts or ISO 8601."),
        click.option("--tz", "tz_h", type=float, help="Time zone of --at and --window, hours from Moscow."),
        click.option("--window", help="Send only between hours H1-H2 (e.g. 9-22)."),
        click.option("--recipient-time", is_flag=True, help="Apply --window in each recipient's time zone."),
    ]):
        f = opt(f)
    return f


@cli.command()
@click.option("--phones-file", required=True, help="One number per line; blank lines, # comments skipped; - = stdin.")
@click.option("--message", help="The text (at most 1000 characters).")
@click.option("--message-file", type=click.Path(dir_okay=False), help="Read the text from a file instead.")
@click.option("--sender", help="Sender name registered in the account.")
@click.option("--campaign-id", help="Your own id (A-Za-z0-9_., ≤ 24): enqueueing it twice is a no-op.")
@click.option("--batch-size", type=click.IntRange(1, 5000), help="Recipients per request (default: from the message).")
@_plan_flags
@click.option("--dry-run", is_flag=True, help="Print the plan; queue nothing.")
@click.option("--strict", is_flag=True, help="Refuse the whole campaign if any line is invalid.")
@click.option("--json", "as_json", is_flag=True, help="Last line: a JSON object.")
def enqueue(phones_file: str, message: str | None, message_file: str | None, sender: str | None,
            campaign_id: str | None, batch_size: int | None, period_h: float | None, freq_min: int | None,
            at: str | None, tz_h: float | None, window: str | None, recipient_time: bool, dry_run: bool,
            strict: bool, as_json: bool) -> None:
    """Validate and enqueue a campaign; print its id."""
    from worker.api import batch_size_for, build_plan, enqueue_file
    from worker.smsc.encoding import validate_message, validate_sender

    s = _settings()
    with _errors(s):
        if (message is None) == (message_file is None):
            raise ValueError("give the text with --message or --message-file (one of them)")
        if message_file is not None:
            message = Path(message_file).read_text(encoding="utf-8").rstrip("\n")
        assert message is not None
        if phones_file != "-" and not Path(phones_file).is_file():
            raise ValueError(f"--phones-file: {phones_file}: no such file")
        segments = validate_message(message)
        if sender is not None:
            validate_sender(sender)
        plan = build_plan(period_h=period_h, freq_min=freq_min, at=at, tz_h=tz_h, window=window,
                          recipient_time=recipient_time)
        for w in plan.warnings if plan else ():
            click.echo(f"warning: {w}", err=True)
        shown = [0]

        def rejected(r: Rejected) -> None:
            # Every invalid line is counted; the first 1,000 are named (line, text, reason).
            shown[0] += 1
            if shown[0] <= 1000:
                click.echo(f"{phones_file}:{r.line_no}: {r.raw!r}: {r.reason}", err=True)
            elif shown[0] == 1001:
                click.echo("... more invalid lines: see the count below", err=True)

        if dry_run or strict:
            summary = _preflight(phones_file, plan, segments.parts, message, batch_size or s.smsc_batch_size,
                                 rejected)
            if dry_run:
                _print_plan(summary, as_json)
                return
            if summary["invalid"]:
                _fail(f"--strict: {summary['invalid']} invalid lines; nothing was queued")
            shown[0] = 0
        receipt = enqueue_file(phones_file, message, sender=sender, campaign_id=campaign_id,
                               period_h=period_h, freq_min=freq_min, at=at, tz_h=tz_h, window=window,
                               recipient_time=recipient_time, batch_size=batch_size,
                               on_rejected=None if strict else rejected)
        size = batch_size_for(message, segments.parts, setting=batch_size or s.smsc_batch_size)
        verb = "already enqueued" if receipt.existing else "enqueued"
        click.echo(f"campaign {receipt.campaign_id} {verb}: {receipt.total} recipients "
                   f"({receipt.invalid} invalid, {receipt.duplicates} duplicates), {receipt.parts} SMS parts "
                   f"each, {receipt.batches} batches of up to {size}")
        if receipt.first_due_ms and receipt.last_due_ms > receipt.first_due_ms:
            click.echo(f"spread from {_ms(receipt.first_due_ms)} to {_ms(receipt.last_due_ms)}")
        if as_json:
            click.echo(json.dumps(receipt.as_dict()))
        else:
            click.echo(receipt.campaign_id)


def _preflight(phones_file: str, plan: spreading.PlanOptions | None, parts: int, message: str,
               batch_setting: int | None, on_rejected: Callable[[Rejected], None]) -> dict[str, Any]:
    """Read the file once without queueing: counts, groups and due times (for --dry-run/--strict)."""
    from worker.api import batch_size_for

    seen: set[str] = set()
    total = invalid = dups = 0
    offsets: dict[int, int] = {}
    now = int(time.time() * 1000)
    default_off = plan.utc_offset_min if plan else 180
    for item in iter_recipients(iter_phones_file(phones_file)):
        if isinstance(item, Rejected):
            invalid += 1
            on_rejected(item)
            continue
        key = phone_key(item[1])
        if key in seen:
            dups += 1
            continue
        seen.add(key)
        total += 1
        if plan and plan.recipient_time:
            off = spreading.recipient_utc_offset_min(item[1], at_ms=plan.start_ms, default_min=default_off)
            offsets[off] = offsets.get(off, 0) + 1
    groups = spreading.effective_group_count(total, plan.groups) if plan and total else min(total, 1)
    sizes = spreading.group_sizes(total, groups) if total else []
    rows = []
    for k, size in enumerate(sizes):
        due = spreading.due_ms_for_group(k, plan, default_off) if plan else now
        rows.append({"group": k, "recipients": size, "due_ms": due, "due": _ms(due)})
    return {"total": total, "invalid": invalid, "duplicates": dups, "parts": parts,
            "sms_estimate": total * parts, "groups": rows,
            "batch_size": batch_size_for(message, parts, setting=batch_setting),
            "recipient_offsets_min": offsets or None, "queued": False}


def _print_plan(summary: dict[str, Any], as_json: bool) -> None:
    click.echo(f"dry run: {summary['total']} recipients ({summary['invalid']} invalid, {summary['duplicates']} "
               f"duplicates), {summary['parts']} parts each, about {summary['sms_estimate']} SMS, "
               f"{len(summary['groups'])} groups, batches of up to {summary['batch_size']}; nothing queued")
    groups = summary["groups"]
    shown = groups if len(groups) <= 12 else [*groups[:6], None, *groups[-5:]]
    for g in shown:
        click.echo("  ..." if g is None else f"  group {g['group']:>5}: {g['recipients']:>8} recipients at {g['due']}")
    if summary["recipient_offsets_min"]:
        zones = ", ".join(f"UTC{o / 60:+g}: {n}" for o, n in sorted(summary["recipient_offsets_min"].items()))
        click.echo(f"  recipients by time zone: {zones}")
    if as_json:
        click.echo(json.dumps(summary))


# -- status, watch ----------------------------------------------------------------------------------
@cli.command()
@click.argument("campaign_id")
@click.option("--json", "as_json", is_flag=True, help="Last line: a JSON object.")
def status(campaign_id: str, as_json: bool) -> None:
    """Where a campaign stands: state, counters, SMS parts and cost."""
    s = _settings()
    with _errors(s):
        st = _campaigns(s).status(campaign_id)
        if as_json:
            click.echo(json.dumps(st))
            return
        click.echo(_status_text(st))


def _status_text(st: dict[str, Any]) -> str:
    lines = [
        f"campaign {st['campaign_id']}: {st['state']}" + (f" — {st['reason']}" if st.get("reason") else ""),
        f"  total {st['total']}  sent {st['sent']}  failed {st['failed']}  cancelled {st['cancelled']}  "
        f"pending {st['pending']}",
        f"  SMS parts {st['sms']} (×{st['parts']} per message)  cost {st['cost']}  invalid lines {st['invalid']}  "
        f"duplicates {st['duplicates']}",
        f"  created {_ms(st['created_ms'])}  started {_ms(st['started_ms'])}  finished {_ms(st['finished_ms'])}",
    ]
    if st.get("account_state") not in (None, "ok") or st.get("account_backoff_until_ms"):
        until = st.get("account_backoff_until_ms")
        back = f", backing off until {_ms(until)}" if until and until > time.time() * 1000 else ""
        lines.append(f"  account {st['account']}: {st['account_state']}{back}"
                     + (f" — {st['account_reason']}" if st.get("account_reason") else "")
                     + f" ({st['account_backoffs']} back-offs)")
    if st.get("last_error"):
        lines.append(f"  last error: {st['last_error']}")
    return "\n".join(lines)


@cli.command()
@click.argument("campaign_id")
@click.option("--interval", type=float, default=0.5, show_default=True, help="Seconds between refreshes.")
@click.option("--timeout", type=float, default=None, help="Give up after this many seconds (exit 1).")
def watch(campaign_id: str, interval: float, timeout: float | None) -> None:
    """A live progress bar until the campaign ends."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    s = _settings()
    with _errors(s):
        camp = _campaigns(s)
        st = camp.status(campaign_id)
        started = time.monotonic()
        console = Console(stderr=False, width=None if sys.stdout.isatty() else 110)
        with Progress(TextColumn("[bold]{task.fields[cid]}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("sent {task.fields[sent]} failed {task.fields[failed]} "
                                 "cancelled {task.fields[cancelled]} · {task.fields[state]}"),
                      TimeElapsedColumn(), console=console, transient=False) as bar:
            task = bar.add_task("campaign", total=st["total"], cid=campaign_id, sent=0, failed=0, cancelled=0,
                                state=st["state"])
            while True:
                st = camp.status(campaign_id)
                done = st["sent"] + st["failed"] + st["cancelled"]
                bar.update(task, completed=done, sent=st["sent"], failed=st["failed"],
                           cancelled=st["cancelled"], state=st["state"] + (" (account: " + st["account_state"]
                                                                          + ")" if st["account_state"] != "ok" else ""))
                if st["state"] in FINAL_STATES and st["pending"] == 0:
                    break
                if timeout is not None and time.monotonic() - started > timeout:
                    _fail(f"campaign {campaign_id} still {st['state']} after {timeout:g} s", 1)
                time.sleep(interval)
        click.echo(_status_text(st))


# -- controls ---------------------------------------------------------------------------------------
@cli.command()
@click.argument("campaign_id")
def pause(campaign_id: str) -> None:
    """Pause a campaign (what is in flight finishes; the rest waits)."""
    s = _settings()
    with _errors(s):
        state = _campaigns(s).pause(campaign_id, now_ms=int(time.time() * 1000))
        click.echo(f"campaign {campaign_id}: {state}")


@cli.command()
@click.argument("campaign_id")
def resume(campaign_id: str) -> None:
    """Resume a paused campaign (also clears its account's stop or back-off)."""
    s = _settings()
    with _errors(s):
        camp = _campaigns(s)
        account = camp.fields(campaign_id).get("account", s.account)
        Guards(camp.r, camp.keys).reset_account(account)
        state = camp.resume(campaign_id, now_ms=int(time.time() * 1000))
        click.echo(f"campaign {campaign_id}: {state}")


@cli.command()
@click.argument("campaign_id")
def cancel(campaign_id: str) -> None:
    """Cancel a campaign: pending recipients become cancelled; what is in flight settles."""
    s = _settings()
    with _errors(s):
        res = _campaigns(s).cancel(campaign_id, now_ms=int(time.time() * 1000))
        click.echo(f"campaign {campaign_id}: {res['state']} ({res['cancelled_now']} recipients cancelled now)")


@cli.command()
@click.argument("campaign_id")
@click.option("--csv", "csv_path", required=True, help="Write the report here (- = stdout).")
def report(campaign_id: str, csv_path: str) -> None:
    """One CSV row per recipient: number, state, provider id, parts, cost, error code and reason."""
    s = _settings()
    with _errors(s):
        camp = _campaigns(s)
        camp.fields(campaign_id)
        out = sys.stdout if csv_path == "-" else open(csv_path, "w", newline="", encoding="utf-8")
        try:
            w = csv.writer(out)
            w.writerow(["phone", "state", "provider_id", "parts", "cost", "error_code", "reason"])
            n = 0
            for row in camp.report_rows(campaign_id):
                w.writerow(row)
                n += 1
        finally:
            if out is not sys.stdout:
                out.close()
        if csv_path != "-":
            click.echo(f"campaign {campaign_id}: {n} rows written to {csv_path}")


@cli.command(name="list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> None:
    """The campaigns, newest last."""
    s = _settings()
    with _errors(s):
        camp = _campaigns(s)
        rows = [camp.status(cid) for cid in camp.campaign_ids()]
        for st in rows:
            if not as_json:
                click.echo(f"{st['campaign_id']}  {st['state']:<10} {st['sent']}/{st['total']} sent  "
                           f"{st['failed']} failed  {st['cancelled']} cancelled  created {_ms(st['created_ms'])}")
        if as_json:
            click.echo(json.dumps(rows))


def main() -> None:
    cli(prog_name="smsc-mailer")


if __name__ == "__main__":
    main()
