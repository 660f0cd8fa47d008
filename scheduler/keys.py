"""Every Redis key of smsc-mailer is built here; this docstring is the keyspace.

All keys share one hash tag, ``{smsc}``, so that every Lua script may touch any of them (a namespace's
batches and a login's slots in one script) and the design holds on Redis Cluster (all in one slot).

Two kinds of keys:

- **namespace keys** ``{smsc}:<ns>:…`` — one deployment's campaigns, batches and queues. Several
  deployments can share one Redis with different ``SMSC_NAMESPACE``\\ s; ``login`` is not a namespace
  (it is the prefix of the login keys).
- **login keys** ``{smsc}:login:<login>:…`` — the provider's rules, kept per login because the provider
  counts per login: every namespace sending with that login shares them (two deployments on one login
  share its 14 slots, its flood chains, its request dedup and its account state). ``<login>`` is what
  :func:`login_id` gives: the login itself, or for an API key (no login) ``#`` followed by the first 24
  hex digits of the key's SHA-256 — never the key.

Namespace keys (``{ns}`` stands for ``{smsc}:<ns>``):

==============================  ======  =====  ==================================  ===================
key                             type    TTL    written by                          read by
==============================  ======  =====  ==================================  ===================
``{ns}:due``                    ZSET    -      intake commit, release, sweep,      dispatcher (claim)
                                               resume; member ``cid:n``, score =
                                               due time (ms, server clock)
``{ns}:leased``                 ZSET    -      claim, begin, mark_sending;         sweep (expired
                                               score = lease deadline (ms)         leases), begin
``{ns}:settle``                 ZSET    -      record (a batch queued "settle      dispatcher (claim:
                                               first": member ``cid:n``, score =   these first, while
                                               its due time); claim removes it     still due in
                                                                                   ``{ns}:due``)
``{ns}:lane:<lane>:<cid>``      ZSET    -      beside every write of ``{ns}:due``  dispatcher (claim)
                                               (create commit, record, begin
                                               defer, sweep, recover, resume,
                                               cancel; ``lane_add`` in
                                               ``lua/_lib.lua``): the campaign's
                                               queued batches in its lane (member
                                               ``cid:n``, score = due time, ms);
                                               claim and cancel remove; may be
                                               stale (the claim checks
                                               ``{ns}:due``); gone when empty
``{ns}:lanes:<lane>``           ZSET    -      claim: the lane's rotation, the     dispatcher (claim)
                                               campaigns with a due batch (member
                                               cid, score = virtual time: batches
                                               given / ``weight``); a campaign
                                               with nothing due leaves it
``{ns}:lanes:<lane>:wait``      ZSET    -      the lane index writers (member      dispatcher (claim
                                               cid, score = its earliest indexed   moves the due ones
                                               due time), claim (a campaign whose  into the rotation)
                                               next batch is not due); cancel
                                               removes a campaign with none left
``{ns}:lanes``                  HASH    -      claim: ``vt:<lane>`` (the lane's    dispatcher (claim)
                                               virtual clock: the score of the
                                               last one served, where a joining
                                               campaign starts), ``since_bulk``
                                               (normal claims since bulk's last)
``{ns}:campaigns``              ZSET    -      intake commit; score = created ms   status listing
``{ns}:meta``                   HASH    -      recovery (``run_id`` of the Redis   recovery check
                                               server whose batches were settled,
                                               ``recovered_ms``, ``marked``);
                                               intake commit (HSETNX ``run_id``:
                                               the server a new namespace starts
                                               on)
``{ns}:deferrals``              HASH    -      sending: recipients deferred, by    /metrics
                                               guard (flood, dedup, slot, closed,
                                               status_limits, backoff, budget)
``{ns}:c:<cid>:codes``          HASH    -      sending: failed recipients by the   /metrics
                                               provider's error code ("" = none)
``{ns}:meta:recovering``        STRING  120 s  recovery: the lock of the one       recovery
                                               process marking batches after a
                                               restart (value: the new run_id)
``{ns}:c:<cid>``                HASH    -      create (claim, commit), intake,     status, begin,
                                               ledger scripts, controls (fields:   report, controls,
                                               see below)                          a retried enqueue
``{ns}:c:<cid>:seen``           SET     1 d    intake (dedup keys of the           intake
                                               recipients so far); the TTL is
                                               renewed by every dedup call
                                               (PEXPIRE in ``lua/intake.lua``);
                                               unlinked at commit, by a failed
                                               intake, and when an interrupted
                                               intake of the same id is taken
                                               over (a producer killed
                                               mid-intake leaves it, with its
                                               ``planning`` campaign, until then
                                               or a day after its last write)
``{ns}:c:_pv<hex>:seen``        SET     600 s  the dry run's dedup (a random id);  dry run
                                               deleted when the dry run ends
``{ns}:c:<cid>:parked``         SET     -      begin (paused campaign/stopped      resume
                                               account)
``{ns}:c:<cid>:budget``         HASH    7 d    budget reserve (batch ref ->        budget reserve
                                               milli reserved by the batch's
                                               request in flight), release; the
                                               TTL is renewed by every reserve
                                               (``scheduler.budget``)
``{ns}:b:<cid>:<n>``            HASH    -      create (stage, due), ledger         worker, report,
                                               scripts, recovery, controls         delivery
                                               (fields: see below)
``{ns}:a:<acct>:campaigns``     SET     -      intake commit (this namespace's     funds/auth pause
                                               campaigns of the account)
``{ns}:c:<cid>:dl``             HASH    -      delivery scripts: counters by code  delivery status,
                                               (``c<code>``), ``tracked``, per     report, poller,
                                               batch ``b<n>`` (rows seen, first    webhooks
                                               tracked ms) and ``e<n>`` (horizon
                                               passed), ``state``, ``final_ms``,
                                               ``completed_ms``; ``webhook`` (the
                                               campaign's URL, set at enqueue)
``{ns}:dr:<cid>:<n>``           STRING  -      delivery scripts: 8 bytes per row   delivery status,
                                               of the batch's report rows (code,   report, poller,
                                               err, time, flags; BITFIELD; see     push receiver
                                               ``lua/delivery/_lib.lua``)
``{ns}:dl:due``                 ZSET    -      delivery scripts (tracking), the    poller (claim)
                                               poller; member ``cid:n``, score =
                                               next status.php poll (ms)
``{ns}:dl:grown``               SET     -      every script appending report rows  delivery tick
                                               (``append_rows``), taken out by
                                               tracking (``d_track``); member
                                               ``cid:n``
``{ns}:dl:scan``                STRING  60 s   the delivery tick's full scan       delivery tick
                                               (a gate: once a minute)
``{ns}:wh:new``                 HASH    -      delivery scripts: final states      webhook cut
                                               queued per batch (ref -> items)
``{ns}:wh:ev``                  HASH    -      webhook cut, delivery finish: the   webhook sender
                                               events not yet acknowledged (id ->
                                               frozen content)
``{ns}:wh:due``                 ZSET    -      webhook cut and sender: id ->       webhook sender
                                               next attempt (ms)
``{ns}:wh:try``                 HASH    -      webhook sender: id -> "attempts,    webhook sender
                                               first_ms"
``{ns}:wh:seq``                 HASH    -      webhook cut: ref -> events cut      webhook cut
``{ns}:wh:dead``                ZSET    -      webhook sender: events given up     status, operator
                                               (id -> ms); their content stays in
                                               ``{ns}:wh:ev``
``{ns}:stop``                   HASH    -      stop list (``scheduler.stoplist``,  intake filter,
                                               CLI ``stoplist``, auto-stop):       send-time filter,
                                               stop key (the digits the provider   CLI ``stoplist``
                                               delivers to) -> ``added_ms|source|
                                               reason``
==============================  ======  =====  ==================================  ===================

The campaign HASH ``{ns}:c:<cid>`` (every time in ms of the server's clock):

- what the campaign is, set by the claim (``lua/create.lua``): ``id``, ``account``, ``message``,
  ``sender``, ``parts``, ``plan`` (the resolved plan options, JSON), ``content`` (JSON of the digests
  that make "the same campaign": account, text, sender, plan options as given), ``created_ms``;
- ``state``: ``planning`` → ``queued`` → ``running`` (↔ ``paused``) → ``completed`` | ``failed``,
  or ``cancelled``;
- while ``planning``: ``owner`` (the intake's random token) and ``lease_until`` (its claim, renewed by
  the claim, ``renew``, ``stage`` and every dedup call), both deleted at the commit; ``batches`` is
  meanwhile the high-water mark of the batches staged, for a takeover to drop;
- at the commit: ``total``, ``invalid``, ``duplicates``, ``batches``, ``groups``, ``first_due_ms``,
  ``last_due_ms``, ``recipients`` (the recipients' digest: ``file:<sha256>`` of the file's bytes or
  ``items:<sha256>`` of the stream), ``queued_ms``;
- counters (begin, record, cancel): ``sent``, ``failed``, ``cancelled``, ``quarantined`` (a part of
  ``failed``), ``sms``, ``cost_milli`` (thousandths of the account's currency); ``last_error``
  (at most 300 characters);
- ``started_ms`` (begin, the first execution), ``finished_ms`` (when every recipient is final),
  ``cancelled_ms`` (cancel); ``paused_ms``, ``paused_from`` (the state a resume returns to) and
  ``pause_reason`` (pause; a resume deletes the three);
- ``durable_checks``: a counter every wait for the disk increments (``scheduler.durability``), the
  write whose fsync WAITAOF waits for.
- ``priority`` (``urgent`` | ``normal`` | ``bulk``; absent or anything else = ``normal``) and
  ``weight`` (a positive number, default 1: its share within its lane), written at the claim from
  ``CampaignSpec.extra``: the lane of its batches (``lua/claim.lua``, ``docs/priorities.md``).

A batch HASH ``{ns}:b:<cid>:<n>``:

- staged by the intake (``lua/create.lua`` ``stage``, ``due``): ``phones`` (the pending recipients,
  joined by ','), ``n`` (how many it was staged with: the commit checks their sum against the
  intake's count), ``state``, ``attempts``, ``owner``, ``due`` (its due time, ms);
- ``state``: ``queued`` → ``sending`` (``lua/mark_sending.lua``) → ``queued`` (what is left, due
  again) or ``done``; ``parked`` while its campaign is paused or its account stopped;
- begin: ``owner`` (the token of the execution that holds it; '' = none), ``unrecorded`` (executions
  begun since the last recorded outcome: at ``QUARANTINE_AFTER`` the batch is quarantined),
  ``settle`` (``1``: its last request may have reached the provider; settle through status.php first);
- mark_sending: ``sent_at`` (the request's start), ``settle_after`` (not settled before this:
  deadline + horizon), ``attempts`` (+1 a request);
- record: ``rows`` (report rows appended, ``phone;state;id;parts;cost;code;reason`` a line), the
  remaining ``phones`` and ``due``; it deletes ``unrecorded`` and ``last_error``;
- ``last_error``: the error of an execution that recorded nothing (``Ledger.note_error``), cited by a
  quarantine; ``quarantined``: the reason, once begin or record quarantined the batch;
- recovery (``lua/recover.lua``, after a Redis restart): ``settle``, ``settle_after``, ``owner``.

``<lane>`` is one of :attr:`Keys.LANES`. The lane keys are the one family named inside Lua as well
(``lua/_lib.lua``, from the due ZSET's prefix: the claim learns the campaigns of a lane only inside the
script); :meth:`Keys.lane`, :meth:`Keys.lane_rotation`, :meth:`Keys.lane_waiting` and
:attr:`Keys.lanes` build the same names, and a test pins the two.

Login keys (``{L}`` stands for ``{smsc}:login:<login>``; ``now`` is always the server's clock):

==============================  ======  =====  ==================================  ===================
key                             type    TTL    written by                          read by
==============================  ======  =====  ==================================  ===================
``{L}``                         HASH    -      account outcome (state, reason,     every slot script,
                                               backoff_until, errors_in_a_row,     begin, status
                                               level, backoffs, last_error,
                                               verified, adaptive_cap, slowed_ms,
                                               slow_answers), prove (proven_fp),
                                               quiet / recovery (quiet_until),
                                               operator's resume
``{L}:inflight``                ZSET    -      semaphore: token → lease deadline   semaphore, slot
                                               (ms); renew, release                check, status slot
``{L}:probe``                   ZSET    -      semaphore: the one request of       semaphore
                                               credentials not proven yet (token
                                               → lease deadline); renew, release
``{L}:revoked``                 ZSET    -      error 2: the slots held when it     slot check
                                               came (token → lease deadline);
                                               renew; entries leave with their
                                               lease
``{L}:status``                  ZSET    -      status semaphore: token → lease     status semaphore
                                               deadline (< 5 status.php requests
                                               in flight); renew, release
``{L}:freed``                   LIST    60 s   slot release (one wake-up a slot    slot waiters
                                               given back, at most 16 kept)        (BLPOP)
``{L}:f:<phone>``               STRING  ≥62 s  flood guard ("count:last_ms")       flood guard
``{L}:r:<sha256>``              STRING  60 s   request dedup (send.php)            request dedup
``{L}:q:<sha256>``              ZSET    60 s   cost requests (a sliding log: one   cost guard
                                               member a request, score = ms)
``{L}:s:<id>:<phone>``          ZSET    60 s   status.php requests about one       status guard
                                               message (sliding log)
``{L}:sm:<sha256>``             ZSET    60 s   one mass status request (the same   status guard
                                               pairs; sliding log)
``{L}:sm``                      ZSET    60 s   every mass status request of the    status guard
                                               login (the strict reading)          (strict)
``{L}:balance``                 ZSET    60 s   balance.php requests (sliding log)  balance guard
==============================  ======  =====  ==================================  ===================

A sliding log's TTL is renewed by each request it counts (it lives one window after the newest). No key
or value holds a password or API key (``proven_fp`` is the caller's salted slow hash of the
credentials, ``#<hex>`` a truncated digest of an API key).
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["CAMPAIGN_ID_RE", "Keys", "batch_ref", "login_id", "split_ref", "text"]

#: What a campaign id may look like: it becomes part of the provider's request ``id`` (≤ 40 chars
#: of ``A-Za-z0-9.-_``) together with ``-<batch number>``.
CAMPAIGN_ID_RE = re.compile(r"^[A-Za-z0-9_.]{1,24}$")

#: The one hash tag of every key.
_HASH_TAG = "{smsc}"

_LOGINS = "login"
_LOGIN_PREFIX = f"{_HASH_TAG}:{_LOGINS}:"
#: Enough of an API key's digest to tell accounts apart (96 bits), too little to matter if it leaked.
_APIKEY_DIGEST_HEX = 24


def text(value: object) -> str:
    """A Redis reply (bytes or str) as ``str``."""
    return value.decode() if isinstance(value, bytes) else str(value)


def batch_ref(campaign_id: str, n: int) -> str:
    """The due-queue member of batch ``n`` of a campaign."""
    return f"{campaign_id}:{n}"


def split_ref(ref: str) -> tuple[str, int]:
    cid, _, n = ref.rpartition(":")
    return cid, int(n)


def login_id(login: str | None = None, *, apikey: str | None = None) -> str:
    """The name of an account in the login keys: the login, or (an API key, no login) ``#`` and a
    truncated SHA-256 of the key. The same for every namespace and process with these credentials."""
    if login:
        return login
    if apikey:
        return "#" + hashlib.sha256(apikey.encode()).hexdigest()[:_APIKEY_DIGEST_HEX]
    raise ValueError("a login or an API key is needed to name the account")


class Keys:
    """Builds the keys of one namespace, and the login keys that every namespace shares."""

    #: The priority lanes, first served first (a campaign's ``priority``; ``lua/claim.lua``).
    LANES = ("urgent", "normal", "bulk")

    def __init__(self, namespace: str = "smsc") -> None:
        if namespace == _LOGINS:
            raise ValueError(f"{_LOGINS!r} cannot be a namespace: it is the prefix of the login keys")
        self.namespace = namespace
        self.prefix = f"{_HASH_TAG}:{namespace}:"
        self.due = self.prefix + "due"
        self.leased = self.prefix + "leased"
        self.settle_due = self.prefix + "settle"
        self.campaigns = self.prefix + "campaigns"
        self.meta = self.prefix + "meta"
        self.recovery_lock = self.meta + ":recovering"
        #: The lanes' shared state (HASH: ``vt:<lane>``, ``since_bulk``).
        self.lanes = self.prefix + "lanes"
        #: Recipients deferred, by the guard that held them (a HASH read by /metrics).
        self.deferrals = self.prefix + "deferrals"

    # -- namespace keys ----------------------------------------------------------------------------
    def campaign(self, cid: str) -> str:
        return f"{self.prefix}c:{cid}"

    def outcome_codes(self, cid: str) -> str:
        """The campaign's failed recipients by the provider's error code (a HASH read by /metrics)."""
        return f"{self.prefix}c:{cid}:codes"

    def seen(self, cid: str) -> str:
        return f"{self.prefix}c:{cid}:seen"

    def parked(self, cid: str) -> str:
        return f"{self.prefix}c:{cid}:parked"

    def budget(self, cid: str) -> str:
        """The campaign's budget reservations (HASH: batch ref -> milli), :mod:`scheduler.budget`."""
        return f"{self.prefix}c:{cid}:budget"

    def batch(self, ref: str) -> str:
        return f"{self.prefix}b:{ref}"

    # -- priority lanes (lua/claim.lua; the scripts name these keys themselves) --------------------
    def lane(self, lane: str, cid: str) -> str:
        """A campaign's lane index (ZSET: batch ref -> due time, ms)."""
        return f"{self.prefix}lane:{_lane(lane)}:{cid}"

    def lane_rotation(self, lane: str) -> str:
        """A lane's rotation (ZSET: campaign id -> virtual time)."""
        return f"{self.prefix}lanes:{_lane(lane)}"

    def lane_waiting(self, lane: str) -> str:
        """A lane's waiting campaigns (ZSET: campaign id -> its earliest indexed due time, ms)."""
        return f"{self.prefix}lanes:{_lane(lane)}:wait"

    def account_campaigns(self, acct: str) -> str:
        return f"{self.prefix}a:{acct}:campaigns"

    # -- delivery (scheduler.delivery) -------------------------------------------------------------
    def delivery(self, cid: str) -> str:
        """The campaign's delivery HASH (counters, per-batch tracking, state, webhook URL)."""
        return f"{self.prefix}c:{cid}:dl"

    def delivery_record(self, ref: str) -> str:
        """A batch's delivery record (STRING, 8 bytes per report row)."""
        return f"{self.prefix}dr:{ref}"

    @property
    def delivery_due(self) -> str:
        return self.prefix + "dl:due"

    @property
    def delivery_grown(self) -> str:
        """Batches whose report rows grew since the delivery side tracked them (named in ``lua/_lib.lua``'s
        ``grown_key`` too)."""
        return self.prefix + "dl:grown"

    @property
    def delivery_scan_gate(self) -> str:
        """Held for a minute by the tick that read every batch of every campaign (the fallback scan)."""
        return self.prefix + "dl:scan"

    @property
    def webhook_new(self) -> str:
        return self.prefix + "wh:new"

    @property
    def webhook_events(self) -> str:
        return self.prefix + "wh:ev"

    @property
    def webhook_due(self) -> str:
        return self.prefix + "wh:due"

    @property
    def webhook_tries(self) -> str:
        return self.prefix + "wh:try"

    @property
    def webhook_seq(self) -> str:
        return self.prefix + "wh:seq"

    @property
    def webhook_dead(self) -> str:
        return self.prefix + "wh:dead"

    # -- stop list (scheduler.stoplist) ------------------------------------------------------------
    @property
    def stoplist(self) -> str:
        """The namespace's stop list (HASH: stop key -> ``added_ms|source|reason``)."""
        return self.prefix + "stop"

    # -- login keys (shared by every namespace) ----------------------------------------------------
    def account(self, login: str) -> str:
        """The login's account state (HASH)."""
        return _login_key(login)

    def inflight(self, login: str) -> str:
        return _login_key(login, "inflight")

    def probe(self, login: str) -> str:
        return _login_key(login, "probe")

    def revoked(self, login: str) -> str:
        return _login_key(login, "revoked")

    def status_inflight(self, login: str) -> str:
        return _login_key(login, "status")

    def slot_freed(self, login: str) -> str:
        return _login_key(login, "freed")

    def flood(self, login: str, phone_key: str) -> str:
        return _login_key(login, "f", phone_key)

    def send_request(self, login: str, fingerprint: str) -> str:
        return _login_key(login, "r", fingerprint)

    def cost_request(self, login: str, fingerprint: str) -> str:
        return _login_key(login, "q", fingerprint)

    def status_message(self, login: str, msg_id: str, phone_key: str) -> str:
        return _login_key(login, "s", msg_id, phone_key)

    def status_mass(self, login: str, digest: str) -> str:
        return _login_key(login, "sm", digest)

    def status_mass_any(self, login: str) -> str:
        return _login_key(login, "sm")

    def balance_requests(self, login: str) -> str:
        return _login_key(login, "balance")


def _lane(lane: str) -> str:
    if lane not in Keys.LANES:
        raise ValueError(f"no lane {lane!r}: one of {', '.join(Keys.LANES)}")
    return lane


def _login_key(login: str, *parts: str) -> str:
    if ":" in login:
        # A login never holds ':' (SMSC logins are letters, digits and a few signs): with one, two
        # logins' keys could meet.
        raise ValueError(f"not a login id: {login!r}")
    return _LOGIN_PREFIX + ":".join((login, *parts))
