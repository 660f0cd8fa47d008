"""The producer's Python API — the one function apps call to enqueue a campaign.

    from worker import enqueue_campaign
    receipt = enqueue_campaign(["+79001234567", "79001234568"], "Your code: 4711", sender="MyShop")
    print(receipt.campaign_id, receipt.total, receipt.invalid)

    # a text of its own per recipient: rows and a template (Jinja2's sandbox), or (phone, text) pairs
    enqueue_campaign([{"phone": "+79001234567", "name": "Anna", "order": "4711"}],
                     template="{{ name }}, your order {{ order }} ships today")
    enqueue_campaign([("+79001234567", "Anna, your order 4711 ships today")])

Recipients are streamed (any iterable of strings or whole numbers, a generator of a million numbers
included), validated and deduplicated; invalid ones are reported through ``on_rejected`` and never
stop the valid ones. The campaign is sent by the workers (``celery -A worker worker``) as soon as
beat dispatches it.

``campaign_id`` makes a retry safe: enqueueing the same id again — also while the first call is still
running, from another process — answers the one campaign (``receipt.existing``), provided the content
is the same (text, sender, plan options as given, and the recipients: the file's bytes, or the
normalized numbers of an iterable); another content under an existing id is refused with a
``CampaignError`` naming what differs. Every instant is the Redis server's clock.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeAlias
from urllib.parse import quote

import redis

from scheduler import spreading
from scheduler.campaigns import CampaignError, Campaigns, CampaignSpec, Receipt
from scheduler.delivery import DeliveryStore
from scheduler.enqueue import IntakeCounts, Item
from scheduler.intake import Rejected, iter_phones_file, iter_recipients, region_error
from scheduler.keys import Keys
from scheduler.ledger import server_time_ms
from scheduler.stoplist import StopList
from worker import rows as _rows
from worker.reader import ChildRows, child_wanted
from worker.runtime import Runtime, redis_client
from worker.settings import ConfigError, Settings, get_settings
from worker.smsc.encoding import count_parts, text_parts, validate_message, validate_sender
from worker.smsc.requests import SendOptions

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "MAX_REQUEST_BYTES",
    "QUOTE_SAMPLE",
    "CampaignOptions",
    "batch_size_for",
    "build_plan",
    "enqueue_campaign",
    "enqueue_file",
    "enqueue_table",
    "preview_campaign",
    "preview_file",
    "preview_table",
]

#: Recipients per send.php request when SMSC_BATCH_SIZE is not set: large enough that the per-request
#: cost (one task, one HTTP round trip, a few Redis scripts) is spread thin, small enough that an
#: unknown outcome settles with a few status requests and a request stays well under a megabyte.
DEFAULT_BATCH_SIZE = 500
#: Upper bound on one request's body; the batch shrinks for long texts so it is never exceeded.
MAX_REQUEST_BYTES = 256 * 1024
#: At most this many SMS parts at stake in one request (long texts get smaller batches).
_MAX_PARTS_PER_BATCH = 1_500
#: A recipient in a ``list`` line costs its digits, a ``+`` (``%2B``) and a comma (``%2C``).
_BYTES_PER_RECIPIENT = 22

Recipients = Iterable[str | int | tuple[int, str | int]]


def batch_size_for(message: str, parts: int, *, setting: int | None = None) -> int:
    """Recipients per request for this message: the setting, else the default shrunk for long texts;
    always within :data:`MAX_REQUEST_BYTES`."""
    base = setting if setting else min(DEFAULT_BATCH_SIZE, max(50, _MAX_PARTS_PER_BATCH // max(parts, 1)))
    text_bytes = len(quote(message, safe=""))
    cap = max(1, (MAX_REQUEST_BYTES - text_bytes - 2048) // _BYTES_PER_RECIPIENT)
    return max(1, min(base, cap))


def build_plan(*, period_h: float | None = None, freq_min: int | None = None, at: str | None = None,
               tz_h: float | None = None, window: str | None = None, recipient_time: bool = False,
               now_ms: int | None = None, refuse_past: bool = True) -> spreading.PlanOptions | None:
    """The spreading options of the CLI flags (``PlanError`` with a one-line reason when bad).

    ``at``: an empty text is an error, not "now" (say ``0``); a time more than a minute in the past
    is refused unless ``refuse_past`` is false (the provider would send at once, which is rarely what
    a past date meant). ``now_ms``: the Redis server's clock (the host's clock only when none is
    given, for a plan without Redis).
    """
    if period_h is None and freq_min is None and at is None and window is None and not recipient_time:
        return None
    # The host's clock only for a plan built without a Redis server; the API passes the server's.
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    past = spreading.PAST_GRACE_MS if refuse_past else None
    start = spreading.parse_start(at, tz_h=tz_h, now_ms=now, max_past_ms=past) if at is not None else now
    win = spreading.parse_window(window) if window is not None else None
    return spreading.PlanOptions(period_h=period_h, freq_min=freq_min, start_ms=start, window=win,
                                 tz_h=tz_h or 0.0, recipient_time=recipient_time)


def _plan_source(*, period_h: float | None, freq_min: int | None, at: str | None, tz_h: float | None,
                 window: str | None, recipient_time: bool) -> dict[str, object]:
    """The plan options as given, for the content digest (``--at +10`` retried later is the same)."""
    return {"period_h": None if period_h is None else float(period_h), "freq_min": freq_min,
            "at": None if at is None else at.strip(), "tz_h": None if tz_h is None else float(tz_h),
            "window": None if window is None else str(spreading.parse_window(window)),
            "recipient_time": recipient_time}


@dataclass(frozen=True)
class CampaignOptions:
    """What a campaign asks beyond its recipients and text: the provider's options, a budget, the
    stop rules, and its link to the campaign it retries."""

    send: SendOptions = field(default_factory=SendOptions)
    #: Pause the campaign (reason ``budget``) before a batch would take its spend past this.
    max_cost: Decimal | None = None
    #: Enqueue even when the balance does not cover the estimate (it pauses at insufficient funds).
    allow_partial: bool = False
    #: Numbers the provider calls invalid (errors 7, 8) go on the stop list.
    auto_stop: bool = False
    retry_of: str | None = None
    #: ``urgent`` (ahead of everything, small batches), ``normal`` (a fair share with the other normal
    #: campaigns) or ``bulk`` (yields to both, never starved); ``weight``: a normal campaign's share.
    priority: str = "normal"
    weight: int = 1
    #: The account (SMSC_ACCOUNTS' name) that sends it; None: ``default``.
    account: str | None = None

    def __post_init__(self) -> None:
        if self.priority not in PRIORITIES:
            raise ValueError(f"--priority {self.priority!r}: give one of {', '.join(PRIORITIES)}")
        if not 1 <= self.weight <= 100:
            raise ValueError(f"--weight {self.weight}: give a whole number from 1 to 100")

    def fields(self) -> dict[str, str]:
        """The campaign HASH fields (also part of the content digest)."""
        out: dict[str, str] = {}
        if self.priority != "normal":
            out["priority"] = self.priority
        if self.weight != 1:
            out["weight"] = str(self.weight)
        if self.account is not None:
            out["account_name"] = self.account
        if self.send != SendOptions():
            out["options"] = self.send.to_json()
        if self.max_cost is not None:
            out["max_cost_milli"] = str(int(self.max_cost * 1000))
        if self.allow_partial:
            out["allow_partial"] = "1"
        if self.auto_stop:
            out["auto_stop"] = "1"
        if self.retry_of:
            out["retry_of"] = self.retry_of
        return out


#: Texts whose parts the intake's check keeps for the batcher: a few dedup chunks' worth.
_COUNTED_MAX = 16_384
#: The priority lanes (see docs/priorities.md).
PRIORITIES = ("urgent", "normal", "bulk")
#: An urgent campaign's batches are small, so that its recipients leave through many slots at once.
URGENT_BATCH_SIZE = 25


class _Prepared:
    """What enqueue and preview share: validated text and sender, the plan on the server's clock."""

    def __init__(self, message: str | None, *, sender: str | None, campaign_id: str | None, period_h: float | None,
                 freq_min: int | None, at: str | None, tz_h: float | None, window: str | None,
                 recipient_time: bool, batch_size: int | None, region: str | None, settings: Settings | None,
                 redis_conn: redis.Redis | None, on_warning: Callable[[str], None] | None,
                 options: CampaignOptions | None = None, template: str | None = None) -> None:
        opts = options or CampaignOptions()
        s = (settings or get_settings()).for_account(opts.account)
        self.settings = s
        self.options = opts
        if sender is None:
            sender = s.default_sender(opts.account)
        send = opts.send
        personal = message is None
        if personal:
            parts = 0
        else:
            assert message is not None
            validate_message(message)
            parts = count_parts(message, translit=send.translit, tinyurl=send.tinyurl, maxsms=send.maxsms)
        if sender is not None:
            sender = validate_sender(sender)
        if opts.max_cost is not None and opts.max_cost <= 0:
            raise ValueError(f"--max-cost {opts.max_cost}: give a positive amount")
        if region is not None and (error := region_error(region)):
            raise ValueError(f"region: {error}")
        self.conn = redis_conn or redis_client(s.redis_url)
        self.now = server_time_ms(self.conn)
        self.campaigns = Campaigns(self.conn, Keys(s.smsc_namespace))
        options_: dict[str, Any] = {"period_h": period_h, "freq_min": freq_min, "at": at, "tz_h": tz_h,
                                    "window": window, "recipient_time": recipient_time, "now_ms": self.now}
        try:
            plan = build_plan(**options_)
        except spreading.PlanError:
            # A retry of a committed campaign whose start has passed since is the same campaign, not a
            # mistake: let the content decide (the plan options as given are what is compared).
            if campaign_id is None or not self._committed(campaign_id):
                raise
            plan = build_plan(**options_, refuse_past=False)
        source = _plan_source(period_h=period_h, freq_min=freq_min, at=at, tz_h=tz_h, window=window,
                              recipient_time=recipient_time)
        if personal:
            size = batch_size or s.smsc_batch_size or DEFAULT_BATCH_SIZE
        else:
            assert message is not None
            size = batch_size_for(message, parts, setting=batch_size or s.smsc_batch_size)
        if opts.priority == "urgent" and not batch_size:
            size = min(size, URGENT_BATCH_SIZE)

        plain_parts = send.translit == 0 and not send.tinyurl and send.maxsms is None
        # The parts of the texts the intake's check counted and the batcher has not asked for yet: the
        # batcher sees a text a dedup chunk or two after its check, so a million texts are counted once.
        # Texts never asked for (duplicates, stop-listed) are forgotten when there are too many.
        counted: dict[str, int] = {}

        def check_text(text: str) -> object:
            segments = validate_message(text, cached=not personal)  # a personal text is seen once
            if plain_parts:
                if len(counted) >= _COUNTED_MAX:
                    counted.clear()
                counted[text] = segments.parts
            return segments

        def counts(text: str) -> int:
            return count_parts(text, translit=send.translit, tinyurl=send.tinyurl, maxsms=send.maxsms)

        def parts_of(text: str) -> int:
            if not plain_parts:
                return counts(text)
            parts = counted.pop(text, None)  # none when a child process checked the texts
            return text_parts(text) if parts is None else parts

        self.check_text = check_text

        self.parts_of = parts_of
        #: A text's parts counted afresh (what a reader in a child process counts: nothing to look up).
        self.count_parts: Callable[[str], int] = text_parts if plain_parts else counts
        self.spec = CampaignSpec(message=message if message is not None else (template or ""), parts=parts,
                                 account=s.account, sender=sender, batch_size=size, plan=plan,
                                 campaign_id=campaign_id, plan_source=source, personal=personal,
                                 parts_of=parts_of if personal else None, max_batch_bytes=MAX_REQUEST_BYTES - 4096,
                                 max_batch_parts=_MAX_PARTS_PER_BATCH, extra=opts.fields())
        self.region = region if region is not None else s.smsc_default_region
        self.stoplist = StopList(self.conn, self.campaigns.keys, region=self.region)
        if plan is not None and on_warning is not None:
            for warning in plan.warnings:
                on_warning(warning)

    def hooks(self, on_duplicate: Callable[[int, str], None] | None,
              on_suppressed: Callable[[int, str], None] | None) -> dict[str, Any]:
        return {"on_duplicate": on_duplicate, "stopped": self.stoplist.contains, "on_suppressed": on_suppressed}

    def _committed(self, cid: str) -> bool:
        try:
            return self.campaigns.fields(cid).get("state", "planning") != "planning"
        except CampaignError:
            return False


def _items(p: _Prepared, recipients: Iterable[Any], message: str | None, template: str | None,
           columns: Mapping[str, str | None]) -> Iterator[Item]:
    """The intake stream of what the caller gave: numbers (one text), rows + a template, or pairs.

    Rows: the first row's keys are the columns, so an unknown placeholder or a missing phone column
    is refused here, before anything is queued."""
    if message is not None:
        return iter_recipients(_numbered(recipients), region=p.region)
    if template is not None:
        it = iter(recipients)
        first = next(it, None)
        if first is None:
            return iter(())
        if not isinstance(first, Mapping):
            raise ValueError(f"with a template, give rows as dicts (column -> value), not {type(first).__name__}")
        tpl = _rows.compile_template(template, list(first))
        phone_column = columns.get("phone_column") or "phone"
        _rows.check_columns(list(first), tpl, phone_column, columns.get("sender_column"), columns.get("tz_column"))
        return _rows.iter_dicts(itertools.chain([first], it), template=tpl, phone_column=phone_column,
                                sender_column=columns.get("sender_column"), tz_column=columns.get("tz_column"),
                                region=p.region, check_text=p.check_text)
    return _rows.iter_pairs(recipients, region=p.region, check_text=p.check_text)


def _items_of(p: _Prepared, given: Iterable[Item] | _ItemsOf) -> Iterable[Item]:
    """Items given as they are, or made by a function of the campaign's text check and parts count (a
    table's rows)."""
    return given(p.check_text, p.count_parts) if callable(given) else given


#: A table's rows as the campaign's own text check and parts count (``_Prepared``) make them.
_ItemsOf: TypeAlias = "Callable[[Callable[[str], object], Callable[[str], int]], Iterable[Item]]"


def _check_message_args(message: str | None, template: str | None) -> None:
    if message is not None and template is not None:
        raise ValueError("give a message (one text for all) or a template (a text per row), not both")


def enqueue_campaign(recipients: Recipients | Iterable[Any], message: str | None = None, *,
                     template: str | None = None, phone_column: str = "phone", sender_column: str | None = None,
                     tz_column: str | None = None, sender: str | None = None,
                     campaign_id: str | None = None, period_h: float | None = None,
                     freq_min: int | None = None, at: str | None = None, tz_h: float | None = None,
                     window: str | None = None, recipient_time: bool = False,
                     batch_size: int | None = None, on_rejected: Callable[[Rejected], None] | None = None,
                     strict: bool = False, region: str | None = None, settings: Settings | None = None,
                     redis_conn: redis.Redis | None = None, on_warning: Callable[[str], None] | None = None,
                     recipients_digest: Callable[[], str] | None = None, webhook: str | None = None,
                     options: CampaignOptions | None = None,
                     on_duplicate: Callable[[int, str], None] | None = None,
                     on_suppressed: Callable[[int, str], None] | None = None,
                     _items_override: Any = None) -> Receipt:
    """Validate and enqueue a campaign; returns its :class:`~scheduler.campaigns.Receipt`.

    Three shapes: ``recipients`` are numbers and ``message`` the one text; or ``recipients`` are rows
    (dicts) and ``template`` renders each one's text (``{{ column }}``, Jinja2's sandbox); or
    ``recipients`` are ``(phone, text)`` pairs (neither message nor template). Rows name their
    numbers' column ``phone_column``, and may carry each one's sender (``sender_column``) and time zone
    (``tz_column``: hours from UTC or a zone name, for a ``window`` with ``recipient_time``).

    ``ValueError`` (one line) for a bad message, template, sender or plan — raised before anything is
    queued; ``CampaignError`` for an id taken by another content, a campaign the balance cannot pay
    (unless ``options.allow_partial``), or (``strict``) an input with an invalid line. ``region``:
    overrides ``SMSC_DEFAULT_REGION``. Numbers are strings or whole numbers (``79001234567``), or
    ``(line_no, number)`` pairs. ``on_warning`` hears the plan's warnings (one line each) before the
    intake starts; ``on_duplicate(line_no, phone)`` each later line of a number already read (the first
    wins); ``on_suppressed(line_no, phone)`` each number on the stop list (left out). ``receipt.durable``
    says whether the commit is on the server's disk. ``webhook``: the campaign's webhook URL (final
    delivery states, completion), else ``SMSC_WEBHOOK_URL``.
    """
    _check_message_args(message, template)
    if webhook is not None and not re.match(r"^https?://[^\s/]+", webhook):
        raise ValueError(f"--webhook {webhook!r}: give an http(s) URL")
    p = _Prepared(message, sender=sender, campaign_id=campaign_id, period_h=period_h, freq_min=freq_min, at=at,
                  tz_h=tz_h, window=window, recipient_time=recipient_time, batch_size=batch_size, region=region,
                  settings=settings, redis_conn=redis_conn, on_warning=on_warning, options=options,
                  template=template)
    columns = {"phone_column": phone_column, "sender_column": sender_column, "tz_column": tz_column}
    items = _items_of(p, _items_override) if _items_override is not None else _items(p, recipients, message, template,
                                                                                       columns)
    # The stop list is checked by the dedup script itself (one round trip a chunk), not by ``stopped``.
    hooks = {**p.hooks(on_duplicate, on_suppressed), "stopped": None, "stoplist": p.stoplist}
    check = _BalanceCheck.of(p, on_warning)
    receipt = p.campaigns.create(p.spec, items, on_rejected=on_rejected, recipients_digest=recipients_digest,
                                 strict=strict, before_commit=check,
                                 on_staged=None if check is None else check.staged, **hooks)
    if webhook and not receipt.existing:
        DeliveryStore(p.campaigns.r, p.campaigns.keys).set_webhook(receipt.campaign_id, webhook)
    return receipt


#: Recipients quoted (``cost=1``) for the balance check before a commit; the rest is extrapolated.
_BALANCE_SAMPLE = 1_000


class _BalanceCheck:
    """Before the commit: the campaign's estimate — the provider's quote of its first requests,
    extrapolated — against the account's balance (balance.php); a campaign the balance cannot pay is
    refused unless ``allow_partial``. Urgent campaigns and those of fewer than ``SMSC_BALANCE_CHECK_MIN``
    recipients are not checked (two requests of the login would delay them more than they are worth).
    Without credentials in the settings there is nobody to ask (the
    workers will say so); a provider that cannot answer now is a warning, not a refusal: the sending
    pauses the campaign at the provider's "insufficient funds" anyway.

    The requests leave early: once the sample's recipients are staged (:meth:`staged`, the intake's
    ``on_staged``) a thread asks them (:func:`worker.costs.affordability`) while the rest of the input is
    read, and the commit (:meth:`__call__`) checks that answer against the campaign's total. A million
    rows no longer wait ~0.7 s (three 200 ms requests, one after another) after the last one is read.
    The same quote of the same recipients either way; the balance is read seconds earlier — no staler
    than the commit's own would be by the time the campaign sends. An intake that then fails has spent
    those requests for nothing (they count toward the provider's per-minute limits, as a quote's do)."""

    @classmethod
    def of(cls, p: _Prepared, on_warning: Callable[[str], None] | None) -> _BalanceCheck | None:
        if p.options.allow_partial or p.options.priority == "urgent":
            return None  # an urgent code leaves at once: a quote and balance.php before it would delay it
        try:
            p.settings.require_credentials()
        except ConfigError:
            return None
        return cls(p, on_warning)

    def __init__(self, p: _Prepared, on_warning: Callable[[str], None] | None) -> None:
        self._p, self._on_warning = p, on_warning
        self._start_at = max(_BALANCE_SAMPLE, p.settings.smsc_balance_check_min)
        self._early: threading.Thread | None = None
        self._answer: Any = None  # the early thread's Affordability, or what it raised

    def staged(self, cid: str, recipients: int) -> None:
        if self._early is None and recipients >= self._start_at:
            self._early = threading.Thread(target=self._ask_early, args=(cid,), daemon=True,
                                           name=f"balance check {cid}")
            self._early.start()

    def _ask_early(self, cid: str) -> None:
        from worker.costs import affordability

        try:
            self._answer = self._asking(lambda rt: affordability(rt, cid, sender=self._p.spec.sender,
                                                                 options=self._p.options.send,
                                                                 sample_limit=_BALANCE_SAMPLE))
        except BaseException as exc:  # every failure is the commit's to handle, there
            self._answer = exc

    def _asking(self, ask: Callable[[Runtime], Any]) -> Any:
        rt = Runtime(self._p.settings, redis=self._p.conn)
        try:
            return ask(rt)
        finally:
            rt.client.close()

    def __call__(self, cid: str, counts: IntakeCounts) -> None:
        p = self._p
        if counts.total < p.settings.smsc_balance_check_min:
            return  # a handful of messages: not worth two requests of the login before they leave
        from worker.costs import CostError, affordable
        from worker.smsc.errors import SmscAuthError

        try:
            if self._early is not None:
                self._early.join()
                if isinstance(self._answer, BaseException):
                    raise self._answer
                verdict = self._answer.check(counts.total)
            else:
                verdict = self._asking(lambda rt: affordable(rt, cid, sender=p.spec.sender, options=p.options.send,
                                                             total=counts.total, sample_limit=_BALANCE_SAMPLE))
        except CostError as exc:
            if isinstance(exc.__cause__, SmscAuthError):
                raise CampaignError(f"the provider refused the account's credentials ({exc.__cause__}): the "
                                    "account is stopped; fix the settings, then resume; nothing was queued") from None
            if self._on_warning is not None:
                self._on_warning(f"balance not checked: {exc}")
            return
        if not verdict.ok:
            raise CampaignError(f"{verdict.describe()}; nothing was queued (top up the account, or enqueue with "
                                "--allow-partial to send what the balance pays for)")


def enqueue_file(path: str | os.PathLike[str], message: str, **kwargs: Any) -> Receipt:
    """:func:`enqueue_campaign` from a phones file (one number per line, ``#`` comments), streamed;
    the file's bytes are the recipients' content digest."""
    digest = hashlib.sha256()
    return enqueue_campaign(iter_phones_file(path, digest=digest), message,
                            recipients_digest=lambda: "file:" + digest.hexdigest(), **kwargs)


def _table(path: str | os.PathLike[str], template: str, kwargs: Mapping[str, Any], *, phone_column: str,
           sender_column: str | None, tz_column: str | None) -> Iterator[tuple[Any, Any]]:
    """The open table and its intake stream; a template error, an unknown placeholder or a missing
    column is refused here, before anything is read or queued."""
    settings = kwargs.get("settings") or get_settings()
    region = kwargs.get("region")
    region = region if region is not None else settings.smsc_default_region
    with _rows.open_table(path) as table, contextlib.ExitStack() as readers:
        tpl = _rows.compile_template(template, table.columns)
        _rows.check_columns(table.columns, tpl, phone_column, sender_column, tz_column)
        rows: dict[str, Any] = {"template": tpl, "phone_column": phone_column, "sender_column": sender_column,
                                "tz_column": tz_column, "region": region}
        child: ChildRows | None = None

        def items(check_text: Callable[[str], object], parts_of: Callable[[str], int]) -> Iterable[Item]:
            nonlocal child
            if child is not None:  # its file's offset is the child's now
                raise RuntimeError("a table's rows are read once")
            if not child_wanted(os.fspath(path), settings.smsc_intake_reader):
                return _rows.iter_rows(table, check_text=check_text, **rows)
            # The child checks each text as validate_message does and counts its parts (parts_of), which the
            # batcher here takes as they are: the child reads a row by its cells (rows.row_tuples) and had
            # less to do than this process; the batcher still counts each text's share of a request body.
            child = readers.enter_context(contextlib.closing(ChildRows(table, parts_of=parts_of, **rows)))
            return child

        def digest() -> str:  # read here, or by the child to the file's end (reading here would race it)
            if child is None:
                return table.digest()
            if child.digest is None:
                raise RuntimeError("the table's digest is asked before its rows were all read")
            return child.digest

        yield digest, items


def enqueue_table(path: str | os.PathLike[str], template: str, *, phone_column: str = "phone",
                  sender_column: str | None = None, tz_column: str | None = None, **kwargs: Any) -> Receipt:
    """:func:`enqueue_campaign` from a CSV or ``.xlsx`` file, a text per row rendered from ``template``,
    streamed; the file's bytes are the recipients' content digest."""
    with contextlib.contextmanager(_table)(path, template, kwargs, phone_column=phone_column,
                                           sender_column=sender_column, tz_column=tz_column) as (digest, items):
        return enqueue_campaign((), template=template, _items_override=items,
                                recipients_digest=lambda: "file:" + digest(), **kwargs)


def preview_campaign(recipients: Recipients | Iterable[Any], message: str | None = None, *,
                     template: str | None = None, phone_column: str = "phone", sender_column: str | None = None,
                     tz_column: str | None = None, sender: str | None = None,
                     period_h: float | None = None, freq_min: int | None = None, at: str | None = None,
                     tz_h: float | None = None, window: str | None = None, recipient_time: bool = False,
                     batch_size: int | None = None, on_rejected: Callable[[Rejected], None] | None = None,
                     region: str | None = None, settings: Settings | None = None,
                     redis_conn: redis.Redis | None = None,
                     on_warning: Callable[[str], None] | None = None, options: CampaignOptions | None = None,
                     on_duplicate: Callable[[int, str], None] | None = None,
                     on_suppressed: Callable[[int, str], None] | None = None,
                     quote: bool = False,
                     _items_override: Any = None) -> dict[str, Any]:
    """The dry run of :func:`enqueue_campaign`: what it would queue (counts, due times, batches, the SMS
    total), by the same dedup and planner, on the same clock; nothing is queued (see
    :meth:`Campaigns.preview`). ``ucs2`` says, for texts that go UCS-2, which characters forced it and
    what the SMS total would be without them or with transliteration.

    ``quote``: also ask the provider (``cost=1``, nothing sent) what the requests would cost: its
    ``quote`` holds ``cost``, ``sms`` and, above :data:`QUOTE_SAMPLE` recipients, the number quoted
    (the rest is extrapolated). Raises ``worker.costs.CostError`` (one line) when it cannot."""
    _check_message_args(message, template)
    p = _Prepared(message, sender=sender, campaign_id=None, period_h=period_h, freq_min=freq_min, at=at, tz_h=tz_h,
                  window=window, recipient_time=recipient_time, batch_size=batch_size, region=region,
                  settings=settings, redis_conn=redis_conn, on_warning=on_warning, options=options,
                  template=template)
    columns = {"phone_column": phone_column, "sender_column": sender_column, "tz_column": tz_column}
    items = _items_of(p, _items_override) if _items_override is not None else _items(p, recipients, message, template,
                                                                                       columns)
    ucs2 = _Ucs2Tally(p.options.send)
    if message is not None:
        ucs2.add(message, 1)
    sample: list[Any] = []

    def each_new(new: list[Any]) -> None:
        if message is None:
            ucs2.add_entries(new)
        if quote and len(sample) < QUOTE_SAMPLE:
            sample.extend(new[:QUOTE_SAMPLE - len(sample)])

    out = p.campaigns.preview(p.spec, items, now_ms=p.now, on_rejected=on_rejected, each_new=each_new,
                              **p.hooks(on_duplicate, on_suppressed))
    if quote:
        out["quote"] = _quote(p, sample, out["total"])
    if message is not None:
        ucs2.scale(out["total"])
    out["utc_offset_min"] = spreading.Plan(p.spec.plan, 0, p.now).utc_offset_min
    out["sms"] = out["sms_estimate"]
    out["ucs2"] = ucs2.summary()
    return out


#: Recipients a quote asks the provider about; the rest of a larger campaign is extrapolated.
QUOTE_SAMPLE = 20_000


def _quote(p: _Prepared, sample: list[Any], total: int) -> dict[str, Any]:
    """The provider's quote of the first recipients, batched as the enqueue batches them."""
    from scheduler.enqueue import PersonalBatcher
    from worker.costs import quote_campaign

    batches: list[list[Any]] = []
    if p.spec.personal:
        batcher = PersonalBatcher(p.spec)
        done = [b for e in sample for b in batcher.add(e.phone, e.text, e.sender)] + batcher.finish()
        for b in done:
            grouped: dict[tuple[str, str | None], list[str]] = {}
            for phone in b.phones:
                grouped.setdefault((b.texts[phone], b.senders.get(phone)), []).append(phone)
            batches.append([(ps, t) if snd is None else (ps, t, snd) for (t, snd), ps in grouped.items()])
    else:
        size = p.spec.batch_size
        batches = [[(sample[i:i + size], p.spec.message)] for i in range(0, len(sample), size)]
    rt = Runtime(p.settings, redis=p.conn)
    try:
        q = quote_campaign(rt, batches, sender=p.spec.sender, options=p.options.send, total=total,
                           sample_limit=QUOTE_SAMPLE, max_wait_s=0)
    finally:
        rt.client.close()
    return {"cost": str(q.cost), "sms": q.sms, "sampled": q.sampled, "total": q.total,
            "extrapolated": q.extrapolated, "text": q.describe()}


class _Ucs2Tally:
    """Which characters forced texts into UCS-2, and the SMS total without them or with translit."""

    def __init__(self, send: SendOptions) -> None:
        self.send = send
        self.texts = 0
        self.chars: dict[str, int] = {}
        self.sms = self.without = self.translit1 = self.translit2 = 0
        self.factor = 1

    def add(self, text: str, weight: int) -> None:
        from worker.smsc.encoding import explain_ucs2

        e = explain_ucs2(text)
        if e is None:
            return
        self.texts += weight
        for ch in e.chars:
            self.chars[ch] = self.chars.get(ch, 0) + weight
        self.sms += e.parts * weight
        self.without += e.parts_without * weight
        self.translit1 += e.parts_translit1 * weight
        self.translit2 += e.parts_translit2 * weight

    def add_entries(self, new: list[Any]) -> None:
        for e in new:
            if not isinstance(e, str):
                self.add(e.text, 1)

    def scale(self, n: int) -> None:
        self.texts *= n
        self.sms, self.without, self.translit1, self.translit2 = (self.sms * n, self.without * n,
                                                                  self.translit1 * n, self.translit2 * n)
        self.chars = {c: k * n for c, k in self.chars.items()}

    def summary(self) -> dict[str, Any] | None:
        if not self.texts:
            return None
        top = sorted(self.chars.items(), key=lambda kv: -kv[1])[:20]
        return {"texts": self.texts, "chars": [c for c, _ in top], "sms": self.sms,
                "sms_without_them": self.without, "sms_translit_1": self.translit1,
                "sms_translit_2": self.translit2}


def preview_file(path: str | os.PathLike[str], message: str, **kwargs: Any) -> dict[str, Any]:
    """:func:`preview_campaign` from a phones file."""
    return preview_campaign(iter_phones_file(path), message, **kwargs)


def preview_table(path: str | os.PathLike[str], template: str, *, phone_column: str = "phone",
                  sender_column: str | None = None, tz_column: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """:func:`preview_campaign` from a CSV or ``.xlsx`` file and a template."""
    with contextlib.contextmanager(_table)(path, template, kwargs, phone_column=phone_column,
                                           sender_column=sender_column, tz_column=tz_column) as (_, items):
        return preview_campaign((), template=template, _items_override=items, **kwargs)


def _numbered(items: Recipients) -> Iterator[tuple[int, object]]:
    for i, item in enumerate(items, start=1):
        yield item if isinstance(item, tuple) else (i, item)
