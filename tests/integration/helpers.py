"""Shared helpers of the integration tests: run the real CLI, wait for a campaign, write phone files, a stack
of workers against a faulty simulator, the search for a password."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from worker.dev.chaos import PASSWORD, find_secret_in_files, find_secret_in_redis
from worker.dev.stack import Stack, child_env

FINAL = {"completed", "failed", "cancelled"}
MESSAGE = "Your parcel is on its way: track it at example.com/t"
# Faults settle fast: a 2 s client timeout, 10 s leases, a 1 s first back-off.
KNOBS = {"SMSC_TIMEOUT": "2", "SMSC_LEASE": "10", "SMSC_BACKOFF": "1"}


def cli(env: Mapping[str, str], *args: str, check: bool = True,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``smsc-mailer ARGS`` as a user would (a separate process with the stack's environment)."""
    proc = subprocess.run([sys.executable, "-m", "worker.cli", *args], env=child_env(env), capture_output=True,
                          text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"smsc-mailer {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def last_json(proc: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def status(env: Mapping[str, str], cid: str) -> dict[str, Any]:
    return last_json(cli(env, "status", cid, "--json"))  # type: ignore[no-any-return]


def wait_until_final(env: Mapping[str, str], cid: str, *, timeout_s: float, poll_s: float = 0.5) -> dict[str, Any]:
    """Poll ``status --json`` until the campaign ends; assert the counters add up at every look."""
    deadline = time.monotonic() + timeout_s
    while True:
        st = status(env, cid)
        assert st["sent"] + st["failed"] + st["cancelled"] + st["pending"] == st["total"], st
        if st["state"] in FINAL and st["pending"] == 0:
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"campaign {cid} did not end within {timeout_s:g} s: {st}")
        time.sleep(poll_s)


def write_phones(path: Path, numbers: Iterable[str], extra_lines: Iterable[str] = ()) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for n in numbers:
            f.write(n + "\n")
        for line in extra_lines:
            f.write(line + "\n")
    return path


def numbers(count: int, *, prefix: str = "7900", start: int = 0) -> list[str]:
    """``count`` distinct 11-digit numbers (digits only)."""
    width = 11 - len(prefix)
    return [f"{prefix}{i:0{width}d}" for i in range(start, start + count)]


def assert_exactly_once(phones_seen: Mapping[str, int], expected: Iterable[str], *, times: int = 1) -> None:
    expected = {p.lstrip("+") for p in expected}
    missing = expected - phones_seen.keys()
    extra = phones_seen.keys() - expected
    wrong = {p: c for p, c in phones_seen.items() if c != times}
    assert not missing, f"{len(missing)} recipients never reached the provider, e.g. {sorted(missing)[:5]}"
    assert not extra, f"{len(extra)} unexpected numbers reached the provider, e.g. {sorted(extra)[:5]}"
    assert not wrong, f"{len(wrong)} numbers got a wrong number of messages, e.g. {dict(list(wrong.items())[:5])}"


def breaches(summary: Mapping[str, Any]) -> dict[str, int]:
    return {k: v for k, v in summary["breaches"].items() if v}


def chaos_stack(celery_stack: Callable[..., Stack], *, latency_ms: float = 20,
                sim_config: dict[str, Any] | None = None, **kwargs: Any) -> Stack:
    """Workers and beat on the session Redis (the chaos account, :data:`KNOBS`), a fresh simulator
    configured with ``sim_config``."""
    env = {**KNOBS, **kwargs.pop("env", {})}
    stack = celery_stack(login="chaos", password=PASSWORD, env=env,
                         sim_options={"latency_ms": latency_ms, "seed": 3}, **kwargs)
    if sim_config:
        assert stack.simulator is not None
        stack.simulator.configure(**sim_config)
    return stack


def enqueue(stack: Stack, path: Path, phones: list[str], *extra: str) -> str:
    """Write ``phones`` to ``path`` and ``smsc-mailer enqueue`` them; the campaign id."""
    write_phones(path, phones)
    out = cli(stack.env, "enqueue", "--phones-file", str(path), "--message", MESSAGE, "--json", *extra)
    return str(last_json(out)["campaign_id"])


def wait_for(what: Callable[[], Any], *, timeout_s: float, poll_s: float = 0.3) -> Any:
    """Poll ``what`` until it returns something true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = what()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what.__doc__ or what}")
        time.sleep(poll_s)


def no_secret_anywhere(stack: Stack, root: Path, *secrets: str) -> None:
    """None of ``secrets`` in any Redis key or value, nor in any file under ``root``."""
    client = stack.redis_client()
    try:
        for secret in secrets:
            assert find_secret_in_redis(client, secret) == []
            assert find_secret_in_files(root, secret) == []
    finally:
        client.close()
