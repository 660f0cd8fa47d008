"""``smsc-mailer`` — the command line.

Every command prints one clear line on bad input and exits non-zero (2 for bad input or settings,
1 when Redis or the provider cannot be reached); ``--json`` makes the last printed line a JSON object.
Times are shown in the zone the options speak: ``--tz`` (hours from Moscow), Moscow by default — the
provider's default — and every time says its zone.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import click
import redis

from scheduler import spreading
from scheduler.campaigns import FINAL_STATES, CampaignError, Campaigns
from scheduler.guards import Guards
from scheduler.intake import IntakeError, Rejected
from scheduler.keys import Keys
from scheduler.ledger import server_time_ms
from worker.cli_common import fail, mask_url, name_counted
from worker.costs import CostError
from worker.delivery.report import (
    REPORT_COLUMNS,
    campaign_status,
    delivery_status,
    report_rows,
    status_lines,
    store_for,
)
from worker.settings import ConfigError, Settings, get_settings
from worker.smsc.phones import mask_phone

__all__ = ["cli", "main"]

F = TypeVar("F", bound=Callable[..., Any])


_mask_url, _fail = mask_url, fail  # the shared ones (worker.cli_common)


def _warn(msg: str) -> None:
    click.echo(f"warning: {msg}", err=True)


def _settings() -> Settings:
    try:
        s = get_settings()
    except ConfigError as exc:
        _fail(str(exc))
        raise  # unreachable
    global _logging_configured
    if not _logging_configured:  # SMSC_LOG_FORMAT, phones masked, secrets redacted; the CLI's own output is not logs
        from worker.logs import configure_logging

        configure_logging(s, level="WARNING")
        _logging_configured = True
    return s


_logging_configured = False


@contextmanager
def _errors(s: Settings | None = None) -> Iterator[None]:
    """Turn the expected failures into one line and an exit code."""
    try:
        yield
    except (CampaignError, IntakeError, spreading.PlanError) as exc:
        _fail(str(exc))
    except ValueError as exc:
        _fail(str(exc))
    except ConfigError as exc:
        _fail(str(exc))
    except CostError as exc:  # the provider could not quote or tell the balance now: try again later
        _fail(str(exc), 1)
    except (redis.ConnectionError, redis.TimeoutError):
        where = _mask_url(s.redis_url) if s else "REDIS_URL"
        _fail(f"cannot reach Redis at {where} (set REDIS_URL)", 1)


def _campaigns(s: Settings) -> Campaigns:
    from worker.runtime import redis_client

    return Campaigns(redis_client(s.redis_url), Keys(s.smsc_namespace))


@contextmanager
def _session() -> Iterator[tuple[Settings, Campaigns]]:
    """The settings and this namespace's campaigns for one command; the expected failures are one line."""
    s = _settings()
    with _errors(s):
        yield s, _campaigns(s)


def _ms(ts: int | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def _zone(tz_h: float | None) -> int:
    """The UTC offset (minutes) of the zone the plan options speak: ``--tz``, else Moscow."""
    return spreading.tz_utc_offset_min(tz_h or 0.0)


def _local(ts_ms: int, offset_min: int) -> str:
    return f"{spreading.format_local(ts_ms, offset_min, seconds=True)} {spreading.zone_label(offset_min)}"


def _durability(what: str, camp: Campaigns) -> None:
    durable = camp.last_durable
    if durable is not None and not durable:
        _warn(f"{what}, but it is {durable}: a crash of Redis now may lose it")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Bulk SMS campaigns through the SMSC HTTP API, sent by Celery workers."""


# -- enqueue --------------------------------------------------------------------------------------
def _plan_flags(f: F) -> F:
    for opt in reversed([
        click.option("--period", "period_h", type=float, help="Spread over this many hours (0.1..720)."),
        click.option("--freq", "freq_min", type=int, help="Every FREQ minutes the next group (1..1440)."),
        click.option("--at", "at", help="Start: DDMMYYhhmm, 'DD.MM.YY hh:mm', +m, 0ts or ISO 8601; 0 = now. "
                                        "A time in the past is refused."),
        click.option("--tz", "tz_h", type=float, help="Time zone of --at and --window, hours from Moscow "
                                                      "(default: Moscow)."),
        click.option("--window", help="Send only from H1:00 to H2:00, e.g. 9-22; 22-9 is overnight "
                                      "(22:00 to 09:00)."),
        click.option("--recipient-time", is_flag=True, help="Apply --window in each recipient's time zone."),
    ]):
        f = opt(f)
    return f


def _read_message_file(path: str, *, flag: str = "--message-file") -> str:
    """The text of ``--message-file`` (UTF-8, a BOM and the final newline dropped); ValueError (one line)."""
    if os.path.isdir(path):
        raise ValueError(f"{flag}: {path}: is a folder, not a file")
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{flag}: {path}: no such file") from None
    except OSError as exc:
        raise ValueError(f"{flag}: {path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{flag}: {path}: byte 0x{data[exc.start]:02x} at byte {exc.start + 1} is not "
                         "UTF-8 (save the file as UTF-8)") from None
    return text.removeprefix("\ufeff").rstrip("\r\n")


def _check_phones_file(path: str) -> None:
    if path == "-":
        return
    if os.path.isdir(path):
        raise ValueError(f"--phones-file: {path}: is a folder, not a file of phone numbers")
    if not os.path.exists(path):
        raise ValueError(f"--phones-file: {path}: no such file")


def _campaign_flags(f: F) -> F:
    """The flags of a campaign: recipients, text, sender, the provider's options (enqueue, quote)."""
    for opt in reversed([
        click.option("--phones-file", help="One number per line; blank lines, # comments skipped; - = stdin."),
        click.option("--csv", "csv_file", help="A CSV (, ; or tab; UTF-8 or Windows-1251) or .xlsx file: one "
                                               "recipient per row, with a header row; use with --template."),
        click.option("--message", help="The text (at most 1000 characters)."),
        click.option("--message-file", help="Read the text from a file (UTF-8) instead."),
        click.option("--template", help="With --csv: each row's text, placeholders are column names: "
                                        "'{{ name }}, order {{ order }} ships today' (Jinja2's sandbox)."),
        click.option("--template-file", help="Read the template from a file (UTF-8) instead."),
        click.option("--phone-column", default="phone", show_default=True, help="With --csv: the numbers' column."),
        click.option("--sender-column", help="With --csv: a column with each row's sender (empty = --sender)."),
        click.option("--tz-column", help="With --csv and --window --recipient-time: each row's time zone "
                                         "(hours from UTC, or a name such as Europe/Moscow)."),
        click.option("--sender", help="Sender name registered in the account (default: the account's)."),
        click.option("--account", help="The account that sends it (a name of SMSC_ACCOUNTS; default: the "
                                       "single-account settings)."),
        click.option("--translit", type=click.IntRange(0, 2), default=0, show_default=True,
                     help="The provider transliterates: 1 Latin (translit), 2 look-alike characters."),
        click.option("--tinyurl", is_flag=True, help="The provider shortens the links in the text."),
        click.option("--flash", is_flag=True, help="Flash SMS (shown at once, not stored)."),
        click.option("--valid", help="How long the operator tries to deliver: 1..24 hours, or hh:mm."),
        click.option("--maxsms", type=click.IntRange(1, 100), help="At most N parts per message; longer texts "
                                                                  "are cut by the provider."),
        click.option("--batch-size", type=click.IntRange(1, 5000), help="Recipients per request (default: from "
                                                                        "the message)."),
    ]):
        f = opt(f)
    return f


class _Campaign:
    """What the campaign flags say, checked: where the recipients come from, and their text."""

    def __init__(self, s: Settings, kw: dict[str, Any]) -> None:
        from worker.smsc.requests import SendOptions

        phones_file, csv_file = kw.pop("phones_file"), kw.pop("csv_file")
        message, message_file = kw.pop("message"), kw.pop("message_file")
        template, template_file = kw.pop("template"), kw.pop("template_file")
        self.phone_column, self.sender_column = kw.pop("phone_column"), kw.pop("sender_column")
        self.tz_column = kw.pop("tz_column")
        if (phones_file is None) == (csv_file is None):
            raise ValueError("give the recipients with --phones-file or --csv (one of them)")
        if csv_file is not None:
            if message is not None or message_file is not None:
                raise ValueError("--csv takes a --template (a text per row), not --message")
            if (template is None) == (template_file is None):
                raise ValueError("--csv: give the text with --template or --template-file (one of them)")
            if template_file is not None:
                template = _read_message_file(template_file, flag="--template-file")
            if not os.path.isfile(csv_file):
                raise ValueError(f"--csv: {csv_file}: " + ("is a folder, not a file" if os.path.isdir(csv_file)
                                                             else "no such file"))
            if self.tz_column is not None and not (kw.get("window") and kw.get("recipient_time")):
                raise ValueError("--tz-column: each row's time zone is for --window with --recipient-time")
        else:
            if template is not None or template_file is not None:
                raise ValueError("--template renders each row of a --csv file; with --phones-file give --message")
            for flag, given in (("--sender-column", self.sender_column), ("--tz-column", self.tz_column)):
                if given is not None:
                    raise ValueError(f"{flag} is for --csv files")
            if (message is None) == (message_file is None):
                raise ValueError("give the text with --message or --message-file (one of them)")
            if message_file is not None:
                message = _read_message_file(message_file)
            _check_phones_file(phones_file)
        self.account: str | None = kw.pop("account")
        if self.account is not None:
            s.for_account(self.account)  # an unknown name: one line, before anything is read
        self.path: str = csv_file if csv_file is not None else phones_file
        self.is_table = csv_file is not None
        self.message: str | None = message
        self.template: str | None = template
        self.send = SendOptions.parse(translit=kw.pop("translit"), tinyurl=kw.pop("tinyurl"),
                                      flash=kw.pop("flash"), valid=kw.pop("valid"), maxsms=kw.pop("maxsms"))
        self.shown = [0, 0, 0]  # rejected, duplicates, suppressed lines named so far

    def _say(self, i: int, line: str) -> None:
        # Every line is counted; the first 1,000 of each kind are named.
        self.shown[i] += 1
        name_counted(self.shown[i], line)

    def rejected(self, r: Rejected) -> None:
        self._say(0, f"{self.path}:{r.line_no}: {r.raw!r}: {r.reason}")

    def duplicate(self, line_no: int, phone: str) -> None:
        if self.is_table:
            self._say(1, f"{self.path}:{line_no}: {mask_phone(phone)}: a duplicate of an earlier row "
                         "(the first row wins)")

    def suppressed(self, line_no: int, phone: str) -> None:
        self._say(2, f"{self.path}:{line_no}: {mask_phone(phone)}: on the stop list (suppressed)")

    def hooks(self) -> dict[str, Any]:
        return {"on_rejected": self.rejected, "on_duplicate": self.duplicate, "on_suppressed": self.suppressed}

    def enqueue(self, **kw: Any) -> Any:
        from worker.api import enqueue_file, enqueue_table

        if self.is_table:
            assert self.template is not None
            return enqueue_table(self.path, self.template, phone_column=self.phone_column,
                                 sender_column=self.sender_column, tz_column=self.tz_column, **kw)
        assert self.message is not None
        return enqueue_file(self.path, self.message, **kw)

    def preview(self, **kw: Any) -> dict[str, Any]:
        from worker.api import preview_file, preview_table

        kw.pop("campaign_id", None)
        if self.is_table:
            assert self.template is not None
            return preview_table(self.path, self.template, phone_column=self.phone_column,
                                 sender_column=self.sender_column, tz_column=self.tz_column, **kw)
        assert self.message is not None
        return preview_file(self.path, self.message, **kw)


@cli.command()
@_campaign_flags
@click.option("--campaign-id", help="Your own id (A-Za-z0-9_., ≤ 24): enqueueing the same campaign again, even "
                                    "at the same time, answers the one campaign; another content is refused.")
@_plan_flags
@click.option("--max-cost", type=str, help="Pause the campaign (reason: budget) before a batch would take its "
                                           "spend past this amount.")
@click.option("--allow-partial", is_flag=True, help="Enqueue even if the balance does not cover the estimate.")
@click.option("--auto-stop", is_flag=True, help="Put numbers the provider calls invalid (errors 7, 8) on the "
                                                "stop list.")
@click.option("--priority", type=click.Choice(["urgent", "normal", "bulk"]), default="normal", show_default=True,
              help="urgent: ahead of everything, in small batches; normal: a fair share with the other normal "
                   "campaigns; bulk: yields to both (never starved).")
@click.option("--weight", type=click.IntRange(1, 100), default=1, show_default=True,
              help="A normal campaign's share against the other normal ones.")
@click.option("--dry-run", is_flag=True, help="Print the plan and the SMS total (the plan the enqueue would make); "
                                              "queue nothing.")
@click.option("--strict", is_flag=True, help="Refuse the whole campaign if any line is invalid.")
@click.option("--webhook", help="POST each recipient's final delivery state and the campaign's completion here "
                                "(signed JSON; default: SMSC_WEBHOOK_URL).")
@click.option("--json", "as_json", is_flag=True, help="Last line: a JSON object.")
def enqueue(**kw: Any) -> None:
    """Validate and enqueue a campaign; print its id."""
    from worker.api import CampaignOptions

    s = _settings()
    with _errors(s):
        c = _Campaign(s, kw)
        max_cost = _money(kw.pop("max_cost"), "--max-cost")
        opts = CampaignOptions(send=c.send, max_cost=max_cost, allow_partial=kw.pop("allow_partial"),
                               auto_stop=kw.pop("auto_stop"), priority=kw.pop("priority"), weight=kw.pop("weight"),
                               account=c.account)
        dry_run, strict, webhook, as_json = kw.pop("dry_run"), kw.pop("strict"), kw.pop("webhook"), kw.pop("as_json")
        tz_h = kw["tz_h"]
        options: dict[str, Any] = {**kw, **c.hooks(), "on_warning": _warn, "settings": s, "options": opts}
        if dry_run:
            _print_plan(c.preview(**options), _zone(tz_h), as_json)
            return
        try:
            receipt = c.enqueue(strict=strict, webhook=webhook, **options)
        except CampaignError:
            if strict and c.shown[0]:
                _fail(f"--strict: {_plural(c.shown[0], 'invalid line')}; nothing was queued")
            raise
        verb = "already enqueued" if receipt.existing else "enqueued"
        each = (f"{_plural(receipt.parts, 'SMS part')} each" if receipt.parts
                else f"{_plural(receipt.sms_estimate, 'SMS', 'SMS')} in all")
        click.echo(f"campaign {receipt.campaign_id} {verb}: {_plural(receipt.total, 'recipient')} "
                   f"({receipt.invalid} invalid, {_plural(receipt.duplicates, 'duplicate')}, "
                   f"{receipt.suppressed} suppressed), {each}, "
                   f"{_plural(receipt.batches, 'batch', 'batches')}")
        offset = _zone(tz_h)
        at, window = kw.get("at"), kw.get("window")
        if receipt.first_due_ms and receipt.last_due_ms > receipt.first_due_ms:
            click.echo(f"due from {_local(receipt.first_due_ms, offset)} to {_local(receipt.last_due_ms, offset)}")
        elif receipt.first_due_ms and not receipt.existing and (at is not None or window is not None):
            click.echo(f"due at {_local(receipt.first_due_ms, offset)}")
        if receipt.durable and not receipt.durable.startswith("on disk"):
            _warn(f"campaign {receipt.campaign_id} is queued, but it is {receipt.durable}: "
                  "a crash of Redis now may lose it")
        if as_json:
            out = receipt.as_dict()
            out["sms"] = receipt.sms_estimate
            click.echo(json.dumps(out))
        else:
            click.echo(receipt.campaign_id)


@cli.command()
@_campaign_flags
@_plan_flags
@click.option("--json", "as_json", is_flag=True, help="Last line: a JSON object with cost and sms.")
def quote(**kw: Any) -> None:
    """Ask the provider what a campaign would cost (cost=1: nothing is sent, nothing queued)."""
    s = _settings()
    with _errors(s):
        c = _Campaign(s, kw)
        s.for_account(c.account).require_credentials()
        as_json = kw.pop("as_json")
        from worker.api import CampaignOptions

        summary = c.preview(**kw, **c.hooks(), on_warning=_warn, settings=s, quote=True,
                            options=CampaignOptions(send=c.send, account=c.account))
        q = summary["quote"]
        click.echo(f"quote: {q['text']} (the provider's price; the local count says {summary['sms_estimate']} SMS)")
        if as_json:
            click.echo(json.dumps({"cost": q["cost"], "sms": q["sms"], "recipients": summary["total"],
                                   "sampled": q["sampled"], "extrapolated": q["extrapolated"],
                                   "sms_estimate": summary["sms_estimate"], "invalid": summary["invalid"],
                                   "duplicates": summary["duplicates"], "suppressed": summary["suppressed"]}))


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


def _print_plan(summary: dict[str, Any], offset_min: int, as_json: bool) -> None:
    zone = spreading.zone_label(offset_min)
    for g in summary["groups"]:
        g["due"] = _local(g["due_ms"], offset_min)
    summary["zone"] = zone
    groups = summary["groups"]
    each = f"{_plural(summary['parts'], 'part')} each, " if summary["parts"] else "texts of their own, "
    click.echo(f"dry run: {_plural(summary['total'], 'recipient')} ({summary['invalid']} invalid, "
               f"{_plural(summary['duplicates'], 'duplicate')}, {summary.get('suppressed', 0)} suppressed), {each}"
               f"{summary['sms_estimate']} SMS in all, {_plural(len({g['group'] for g in groups}), 'group')}, "
               f"{_plural(summary['batches'], 'batch', 'batches')} of up to {summary['batch_size']}; "
               f"nothing queued")
    u = summary.get("ucs2")
    if u:
        chars = " ".join(repr(c) for c in u["chars"])
        click.echo(f"  {_plural(u['texts'], 'text')} go as UCS-2 (70 characters a part) because of {chars}: "
                   f"{u['sms']} SMS; without those characters {u['sms_without_them']}, "
                   f"with --translit 1 {u['sms_translit_1']}, with --translit 2 {u['sms_translit_2']}")
    click.echo(f"  times in {zone}, the zone of --at and --window (--tz)")
    shown = groups if len(groups) <= 12 else [*groups[:6], None, *groups[-5:]]
    for g in shown:
        if g is None:
            click.echo("  ...")
            continue
        noun = "recipient " if g["recipients"] == 1 else "recipients"
        click.echo(f"  group {g['group']:>5}: {g['recipients']:>8} {noun} at {g['due']}")
    if summary["recipient_offsets_min"]:
        offsets = sorted(summary["recipient_offsets_min"].items())
        zones = ", ".join(f"{spreading.zone_label(o)}: {n}" for o, n in offsets)
        click.echo(f"  recipients by time zone: {zones}")
    if as_json:
        click.echo(json.dumps(summary))


# -- status, watch ----------------------------------------------------------------------------------
@cli.command()
@click.argument("campaign_id")
@click.option("--json", "as_json", is_flag=True, help="Last line: a JSON object.")
def status(campaign_id: str, as_json: bool) -> None:
    """Where a campaign stands: state, counters, SMS parts and cost."""
    with _session() as (s, camp):
        st = campaign_status(s, camp, campaign_id)
        if as_json:
            click.echo(json.dumps(st))
            return
        click.echo(_status_text(st, server_time_ms(camp.r), s.smsc_concurrency))
        click.echo("\n".join(status_lines(st["delivery"])))
        for finding in st["health"]:
            click.echo(f"  health: {finding['kind']} — {finding['detail']}")


def _status_text(st: dict[str, Any], now_ms: int, configured_cap: int) -> str:
    lines = [
        f"campaign {st['campaign_id']}: {st['state']}" + (f" — {st['reason']}" if st.get("reason") else ""),
        f"  account {st.get('account_name', 'default')}, priority {st.get('priority', 'normal')}"
        + (f" (weight {st['weight']})" if st.get("weight", 1) != 1 else "")
        + (f", {st['suppressed']} suppressed by the stop list" if st.get("suppressed") else "")
        + (f", spent {st['spent']} of max-cost {st['max_cost']}" if st.get("max_cost") else ""),
        f"  total {st['total']}  sent {st['sent']}  failed {st['failed']}  cancelled {st['cancelled']}  "
        f"pending {st['pending']}",
        f"  SMS parts {st['sms']} (×{st['parts']} per message)  cost {st['cost']}  invalid lines {st['invalid']}  "
        f"duplicates {st['duplicates']}",
        f"  created {_ms(st['created_ms'])}  started {_ms(st['started_ms'])}  finished {_ms(st['finished_ms'])}",
    ]
    if st["state"] == "planning":
        if st.get("intake_alive"):
            lines.append("  being enqueued right now: nothing of it is queued until its intake commits")
        else:
            ran_out = _ms(st.get("intake_lease_until_ms"))
            lines.append(f"  interrupted: its enqueue stopped (its claim ran out at {ran_out}) and nothing of it is "
                         f"queued; enqueue it again with --campaign-id {st['campaign_id']} to finish it")
    if st.get("quarantined"):
        lines.append(f"  quarantined {st['quarantined']} (counted in failed: their batch failed too often; "
                     "the report has the reason)")
    if st.get("account_state") not in (None, "ok") or st.get("account_backoff_until_ms"):
        until = st.get("account_backoff_until_ms")
        back = f", backing off until {_ms(until)}" if until and until > now_ms else ""
        lines.append(f"  account {st['account']}: {st['account_state']}{back}"
                     + (f" — {st['account_reason']}" if st.get("account_reason") else "")
                     + f" ({_plural(st['account_backoffs'], 'back-off')})")
    cap = st.get("account_cap")
    if cap is not None and cap < configured_cap:
        why = ("until the login's credentials have a good answer" if not st.get("account_verified")
               else "lowered while the provider answers slowly")
        lines.append(f"  login cap: {cap} of {configured_cap} requests in flight ({why})")
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

    with _session() as (s, camp):
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
                st = camp.status(campaign_id, configured_cap=s.smsc_concurrency)
                done = st["sent"] + st["failed"] + st["cancelled"]
                bar.update(task, total=st["total"], completed=done, sent=st["sent"], failed=st["failed"],
                           cancelled=st["cancelled"], state=st["state"] + (" (account: " + st["account_state"]
                                                                          + ")" if st["account_state"] != "ok" else ""))
                if st["state"] in FINAL_STATES and st["pending"] == 0:
                    break
                if st["state"] == "planning" and not st.get("intake_alive"):
                    break  # an interrupted enqueue: the status below says so
                if timeout is not None and time.monotonic() - started > timeout:
                    _fail(f"campaign {campaign_id} still {st['state']} after {timeout:g} s", 1)
                time.sleep(interval)
        click.echo(_status_text(st, server_time_ms(camp.r), s.smsc_concurrency))
        click.echo("\n".join(status_lines(delivery_status(store_for(s, camp), campaign_id, sent=st["sent"]))))


# -- controls ---------------------------------------------------------------------------------------
def _control(campaign_id: str, act: Callable[[Settings, Campaigns], tuple[str, str]]) -> None:
    """Run a control; print the campaign's state (and what ``act`` adds to it) and whether it is durable."""
    with _session() as (s, camp):
        state, more = act(s, camp)
        click.echo(f"campaign {campaign_id}: {state}{more}")
        _durability(f"campaign {campaign_id} is {state}", camp)


@cli.command()
@click.argument("campaign_id")
def pause(campaign_id: str) -> None:
    """Pause a campaign (what is in flight finishes; the rest waits)."""
    _control(campaign_id, lambda s, camp: (camp.pause(campaign_id), ""))


@cli.command()
@click.argument("campaign_id")
@click.option("--max-cost", help="Set the campaign's budget first (a campaign its budget paused goes on "
                                 "with a higher one); 'none' removes the budget.")
def resume(campaign_id: str, max_cost: str | None) -> None:
    """Resume a paused campaign (also clears its account's stop or back-off)."""
    from scheduler.budget import Budget

    def act(s: Settings, camp: Campaigns) -> tuple[str, str]:
        fields = camp.fields(campaign_id)
        if max_cost is not None:
            amount = None if max_cost.strip().lower() == "none" else _money(max_cost, "--max-cost")
            Budget(camp.r, camp.keys).set_max(campaign_id, None if amount is None else int(amount * 1000))
        elif (fields.get("pause_reason") or "").startswith("budget") and fields.get("max_cost_milli"):
            _warn(f"campaign {campaign_id} was paused by its budget: it pauses again before its next batch "
                  "unless you raise it (resume --max-cost X)")
        account = fields.get("account") or s.account
        Guards(camp.r, camp.keys).reset_account(account)
        return camp.resume(campaign_id), ""  # durable: covers the account's reset too (one server, one order)

    _control(campaign_id, act)


@cli.command()
@click.argument("campaign_id")
def cancel(campaign_id: str) -> None:
    """Cancel a campaign: pending recipients become cancelled; what is in flight settles."""

    def act(s: Settings, camp: Campaigns) -> tuple[str, str]:
        res = camp.cancel(campaign_id)
        return res["state"], f" ({_plural(res['cancelled_now'], 'recipient')} cancelled now)"

    _control(campaign_id, act)


def _open_report(path: str) -> Any:
    """The report's file, opened for writing before anything is read; ValueError (one line) if it cannot be."""
    if os.path.isdir(path):
        raise ValueError(f"--csv: {path}: is a folder; give a file name")
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise ValueError(f"--csv: {path}: the folder {folder} does not exist")
    try:
        return open(path, "w", newline="", encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"--csv: {path}: cannot write: {exc.strerror or exc}") from None


@cli.command()
@click.argument("campaign_id")
@click.option("--csv", "csv_path", required=True, help="Write the report here (- = stdout).")
def report(campaign_id: str, csv_path: str) -> None:
    """One CSV row per recipient: number, state, provider id, parts, cost, error code and reason."""
    with _session() as (s, camp):
        if camp.fields(campaign_id).get("state") == "planning":
            raise ValueError(f"campaign {campaign_id} is not queued yet (see: smsc-mailer status {campaign_id}); "
                             "there is nothing to report")
        out = sys.stdout if csv_path == "-" else _open_report(csv_path)
        try:
            w = csv.writer(out)
            w.writerow(["phone", "state", "provider_id", "parts", "cost", "error_code", "reason", *REPORT_COLUMNS])
            n = 0
            for row in report_rows(store_for(s, camp), campaign_id):
                w.writerow(row)
                n += 1
        except OSError as exc:
            raise ValueError(f"--csv: {csv_path}: cannot write: {exc.strerror or exc}") from None
        finally:
            if out is not sys.stdout:
                out.close()
        if csv_path != "-":
            click.echo(f"campaign {campaign_id}: {_plural(n, 'row')} written to {csv_path}")


@cli.command(name="list")
@click.option("--account", help="Only the campaigns of this account (SMSC_ACCOUNTS' name, or default).")
@click.option("--priority", type=click.Choice(["urgent", "normal", "bulk"]), help="Only this priority.")
@click.option("--state", help="Only campaigns in this state (queued, running, paused, completed, ...).")
@click.option("--json", "as_json", is_flag=True)
def list_(account: str | None, priority: str | None, state: str | None, as_json: bool) -> None:
    """The campaigns, newest last."""
    with _session() as (_, camp):
        rows = [camp.status(cid) for cid in camp.campaign_ids()]
        rows = [st for st in rows if (account is None or st["account_name"] == account)
                and (priority is None or st["priority"] == priority) and (state is None or st["state"] == state)]
        for st in rows:
            if not as_json:
                click.echo(f"{st['campaign_id']}  {st['state']:<10} {st['sent']}/{st['total']} sent  "
                           f"{st['failed']} failed  {st['cancelled']} cancelled  {st['account_name']}/"
                           f"{st['priority']}  created {_ms(st['created_ms'])}")
        if as_json:
            click.echo(json.dumps(rows))


@cli.command(name="status-receiver")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="Port to listen on (0 = a free one; the printed line names it).")
def status_receiver(host: str, port: int) -> None:
    """Serve the endpoint the provider posts status changes to: POST /smsc/status[/<SMSC_PUSH_TOKEN>]."""
    from worker.delivery.receiver import main as receiver_main

    sys.exit(receiver_main(["--host", host, "--port", str(port)]))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=9180, show_default=True, help="Port (0: a free one).")
def metrics(host: str, port: int) -> None:
    """Serve Prometheus /metrics, read from the ledger at every scrape (every worker's work counted)."""
    from worker.metrics import main as metrics_main

    sys.exit(metrics_main(["--host", host, "--port", str(port)]))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: a free one).")
def serve(host: str, port: int) -> None:
    """Serve the HTTP API (/v1), the dashboard (/ui) and /metrics (bearer tokens: SMSC_API_TOKENS)."""
    from worker.http.serve import serve_main

    sys.exit(serve_main(host, port))


def _register() -> None:
    """The command groups that live in modules of their own."""
    from worker.cli_audience import audience
    from worker.cli_retry import retry
    from worker.cli_stoplist import stoplist
    from worker.http.serve import api_token

    cli.add_command(audience)
    cli.add_command(stoplist)
    cli.add_command(retry)
    cli.add_command(api_token)


_register()


def main() -> None:
    """The entry point: click's own usage errors (an unknown option, ``--batch-size abc``) are one line too."""
    try:
        rv = cli.main(prog_name="smsc-mailer", standalone_mode=False)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "smsc-mailer"
        _fail(f"{exc.format_message()} (see {where} --help)")
    except click.ClickException as exc:
        _fail(exc.format_message())
    except click.Abort:
        _fail("aborted", 1)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
