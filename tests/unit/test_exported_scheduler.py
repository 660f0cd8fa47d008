"""The public surface of the scheduler's Redis side is pinned: a change to it is a deliberate one.

(``scheduler.intake`` and ``scheduler.spreading`` are pinned in their own test modules; ``spreading``
re-exports the names of ``times`` and ``windows``, pinned here.)
"""

from __future__ import annotations

import inspect
import re
from importlib import resources
from types import ModuleType

import pytest
import redis

from scheduler import (
    budget,
    campaigns,
    durability,
    enqueue,
    guards,
    keys,
    ledger,
    preview,
    recovery,
    scripts,
    stoplist,
    times,
    windows,
)

EXPORTED = {
    keys: ["CAMPAIGN_ID_RE", "Keys", "batch_ref", "login_id", "split_ref", "text"],
    scripts: ["SCRIPT_NAMES", "Arg", "Script", "Scripts", "Text", "clock_arg", "source"],
    guards: ["AccountPolicy", "AccountState", "AccountStatus", "AccountVerdict", "AdaptivePolicy", "Answer",
             "FloodPolicy", "Guards", "SlotResult", "StatusPolicy", "Take", "TakeVerdict"],
    ledger: ["QUARANTINE_AFTER", "Begin", "BeginVerdict", "Launch", "LaunchVerdict", "Ledger", "Outcome", "Sending",
             "Settle", "server_time_ms", "settle_after_ms", "settle_margin_ms"],
    durability: ["DEFAULT_TIMEOUT_MS", "Durability", "Durable", "wait_durable"],
    campaigns: ["FINAL_STATES", "CampaignError", "CampaignSpec", "Campaigns", "Receipt", "new_campaign_id"],
    enqueue: ["CLAIM_LEASE_MS", "CampaignError", "CampaignSpec", "Enqueue", "Entry", "IntakeCounts", "Item",
              "Personal", "PersonalBatcher", "Receipt", "deduplicated", "list_safe", "new_campaign_id"],
    budget: ["RESERVATIONS_TTL_MS", "Budget", "Reservation"],
    stoplist: ["CHUNK", "MAX_REASON", "SOURCES", "Entry", "StopList", "check_reason", "stop_key"],
    preview: ["preview"],
    recovery: ["ensure_recovered"],
    times: ["DAY_MS", "HOUR_MS", "MINUTE_MS", "MOSCOW_UTC_OFFSET_H", "PAST_GRACE_MS", "PlanError", "format_local",
            "parse_start", "recipient_utc_offset_min", "tz_utc_offset_min", "zone_label"],
    windows: ["Window", "open_time_add", "parse_window", "window_next_open"],
}


@pytest.mark.parametrize("module", list(EXPORTED), ids=lambda m: m.__name__)
def test_all_is_pinned(module: ModuleType) -> None:
    assert sorted(module.__all__) == sorted(EXPORTED[module])


@pytest.mark.parametrize("module", list(EXPORTED), ids=lambda m: m.__name__)
def test_every_exported_name_exists(module: ModuleType) -> None:
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


@pytest.mark.parametrize("module", list(EXPORTED), ids=lambda m: m.__name__)
def test_every_public_class_and_function_defined_in_the_module_is_exported(module: ModuleType) -> None:
    defined_here = {
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and obj.__module__ == module.__name__
    }
    assert defined_here - set(module.__all__) == set()


def test_every_script_ships_as_package_data_and_opens_with_its_contract() -> None:
    folder = resources.files("scheduler") / "lua"
    shipped = {f.name.removesuffix(".lua") for f in folder.iterdir() if f.name.endswith(".lua")}
    assert shipped - {"_lib"} == set(scripts.SCRIPT_NAMES)
    for name in scripts.SCRIPT_NAMES:
        own = (folder / f"{name}.lua").read_text(encoding="utf-8")
        assert own.startswith(f"-- {name}.lua"), f"{name}.lua does not open with its contract"
        assert re.search(r"^--.*\bReturns\b", own, re.MULTILINE), f"{name}.lua does not state what it returns"
        assert scripts.source(name).endswith(own), f"{name}: the helpers come first, then the script"


def test_every_script_is_a_typed_attribute_of_scripts(redis_client: redis.Redis) -> None:
    registered = scripts.Scripts(redis_client).all()
    assert sorted(registered) == sorted(scripts.SCRIPT_NAMES)
    assert all(isinstance(s, scripts.Script) and s.name == name for name, s in registered.items())
    # Each one runs on the real server as registered (EVALSHA, loaded on NOSCRIPT): a script whose
    # helpers or body do not compile fails here, not in the first batch.
    for name in scripts.SCRIPT_NAMES:
        redis_client.script_load(scripts.source(name))


def test_a_script_that_does_not_ship_cannot_be_registered(redis_client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="no script named"):
        scripts.Script(redis_client, "nope")
