"""Issue 10 through the command line, against the simulator over HTTP and real worker processes: a text of
its own per row from a CSV or .xlsx file, what a campaign costs (quote, balance), and the stop list."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook

from scheduler.keys import Keys, batch_ref
from tests.integration.helpers import breaches, cli, last_json, wait_until_final
from worker.dev.stack.simulator import DEMO_LOGIN, DEMO_PASSWORD
from worker.smsc.encoding import count_parts, text_parts

pytestmark = pytest.mark.integration

TEMPLATE = "{{ name }}, ваш заказ {{ order }} отправлен{% if city %} в {{ city }}{% endif %}"


def _excel_csv(path: Path, rows: list[list[str]]) -> Path:
    """A ';' CSV as Excel in Russia saves it: Windows-1251, CRLF, a quoted field with a line break."""
    with path.open("w", encoding="cp1251", newline="") as f:
        w = csv.writer(f, delimiter=";", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
        w.writerows(rows)
    return path


def _records(sim: Any) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    offset = 0
    while page := sim.record(offset=offset, limit=1000):
        for m in page:
            assert m["phone"] not in out, f"{m['phone']} received twice"
            out[m["phone"]] = m
        offset += len(page)
    return out


def _nothing_queued(redis_client: Any) -> bool:
    return not any(k for k in redis_client.scan_iter("*") if b":due" in k or b":c:" in k or b":b:" in k)


def test_a_windows_1251_csv_from_excel_sends_each_row_its_own_text_and_names_the_bad_rows(
        celery_stack: Any, redis_client: Any, tmp_path: Path) -> None:
    stack = celery_stack(workers=2, concurrency=2, sim_options={"latency_ms": 5})
    rows = [["phone", "name", "order", "city"]]
    rows += [[f"+7911{i:07d}", f"Клиент №{i}", str(4700 + i), "Москва" if i % 2 else ""] for i in range(300)]
    rows.insert(5, ["+79119999901", "Без заказа", "", ""])  # an empty placeholder column: line 6
    rows.insert(9, ["not a phone", "Имя", "1", ""])  # line 10
    rows.insert(20, ["+79119999902", "Многострочная\r\nячейка", "9", ""])  # a line break inside a cell
    rows.append(["+79110000001", "Дубль", "1", ""])  # the first row of this number wins
    path = _excel_csv(tmp_path / "clients.csv", rows)
    enq = cli(stack.env, "enqueue", "--csv", str(path), "--template", TEMPLATE, "--json")
    receipt = last_json(enq)
    assert (receipt["total"], receipt["invalid"], receipt["duplicates"], receipt["suppressed"]) == (301, 2, 1, 0)
    assert f"{path}:6: " in enq.stderr and "column 'order'" in enq.stderr
    assert f"{path}:10: " in enq.stderr and "column 'phone'" in enq.stderr
    assert "a duplicate of an earlier row" in enq.stderr
    st = wait_until_final(stack.env, receipt["campaign_id"], timeout_s=180)
    assert (st["state"], st["sent"], st["failed"], st["pending"]) == ("completed", 301, 0, 0)
    got = _records(stack.simulator)
    assert len(got) == 301
    assert got["79110000001"]["text"] == "Клиент №1, ваш заказ 4701 отправлен в Москва"
    assert got["79110000002"]["text"] == "Клиент №2, ваш заказ 4702 отправлен"
    assert got["79119999902"]["text"] == "Многострочная\r\nячейка, ваш заказ 9 отправлен"
    assert st["sms"] == sum(m["parts"] for m in got.values()) == receipt["sms"]
    assert breaches(stack.simulator.summary()) == {}


def test_an_xlsx_with_missing_cells_is_streamed_and_sent(celery_stack: Any, redis_client: Any,
                                                        tmp_path: Path) -> None:
    stack = celery_stack(workers=1, concurrency=2, sim_options={"latency_ms": 5})
    wb = Workbook()
    ws = wb.active
    ws.append(["Phone", "Name", "Order"])
    ws.append([79120000001, "Anna", 4711])  # a number cell, as Excel stores phones
    ws.append(["+79120000002", "Boris", None])  # an empty cell the template needs
    ws.append(["+79120000003", "Vera", 4713])
    wb.save(tmp_path / "people.xlsx")
    enq = cli(stack.env, "enqueue", "--csv", str(tmp_path / "people.xlsx"), "--phone-column", "Phone",
              "--template", "{{ Name }}: order {{ Order }} ships today", "--json")
    receipt = last_json(enq)
    assert (receipt["total"], receipt["invalid"]) == (2, 1)
    assert "people.xlsx:3: " in enq.stderr and "column 'Order'" in enq.stderr
    wait_until_final(stack.env, receipt["campaign_id"], timeout_s=120)
    texts = {p: m["text"] for p, m in _records(stack.simulator).items()}
    assert texts == {"79120000001": "Anna: order 4711 ships today", "79120000003": "Vera: order 4713 ships today"}


@pytest.fixture
def sim_env(make_simulator: Any, redis_server: Any, redis_client: Any) -> Any:
    def make(**sim_options: Any) -> tuple[dict[str, str], Any]:
        sim = make_simulator(**sim_options)
        env = {"REDIS_URL": redis_server.url, "SMSC_LOGIN": DEMO_LOGIN, "SMSC_PASSWORD": DEMO_PASSWORD,
               "SMSC_BASE_URL": sim.url}
        return env, sim
    return make


def test_quote_asks_the_provider_and_the_sixth_identical_quote_in_a_minute_is_refused_here(
        sim_env: Any, tmp_path: Path) -> None:
    env, sim = sim_env()
    phones = tmp_path / "p.txt"
    phones.write_text("".join(f"+7913{i:07d}\n" for i in range(40)))
    args = ("quote", "--phones-file", str(phones), "--message", "Скидка 20% только сегодня", "--json")
    answers = [last_json(cli(env, *args)) for _ in range(5)]
    assert answers[0]["sms"] == 40 and answers[0]["cost"] == "60.00"  # 1.50 a part at the simulator
    assert all(a == answers[0] for a in answers)
    sixth = cli(env, *args, check=False)
    assert sixth.returncode == 1 and "five identical quote requests a minute" in sixth.stderr
    assert "Traceback" not in sixth.stderr
    summary = sim.summary()
    assert breaches(summary) == {} and summary["messages"] == 0  # nothing sent, no rule of the provider hit


def test_translit_changes_what_the_quote_and_the_dry_run_count(sim_env: Any, tmp_path: Path) -> None:
    env, _ = sim_env()
    phones = tmp_path / "p.txt"
    phones.write_text("+79140000001\n")
    text = "Здравствуйте! Ваш заказ передан в службу доставки и прибудет завтра до обеда."
    dry = cli(env, "enqueue", "--phones-file", str(phones), "--message", text, "--dry-run")
    assert "go as UCS-2" in dry.stdout and "with --translit 1 1" in dry.stdout
    plain = last_json(cli(env, "quote", "--phones-file", str(phones), "--message", text, "--json"))
    latin = last_json(cli(env, "quote", "--phones-file", str(phones), "--message", text, "--translit", "1",
                          "--json"))
    assert (plain["sms"], latin["sms"]) == (2, 1)


@pytest.mark.parametrize("template,options", [
    (TEMPLATE, ()),  # Jinja renders (a condition): rows.row_tuples hands each row to iter_rows's check
    # The fast path; the parts counted by the child with the campaign's translit (2 in UCS-2, 1 in Latin).
    ("{{ name }}, ваш заказ {{ order }} отправлен сегодня; курьер позвонит за час до приезда", ("--translit", "1")),
], ids=["jinja", "plain-translit"])
def test_a_table_read_by_a_child_process_is_queued_exactly_as_one_read_here(
        sim_env: Any, redis_client: Any, tmp_path: Path, template: str, options: tuple[str, ...]) -> None:
    """``SMSC_INTAKE_READER=child`` (worker/reader.py; ``auto`` does it for files of 4 MiB or more): the same
    receipt (the SMS total too), the same lines named on stderr, the same batches with the same texts in
    Redis."""
    env, _ = sim_env()
    rows = [["phone", "name", "order", "city"]]
    rows += [[f"+7918{i:07d}", f"Клиент №{i}", str(4700 + i), "Москва" if i % 2 else ""] for i in range(2_600)]
    rows[7][2] = ""  # an empty placeholder column
    rows[30][0] = "not a phone"
    rows[44][1] = "Строка\r\nс переносом; и | : , \\"  # a quoted line break and the list separators
    rows[1500][0] = rows[900][0]  # a duplicate: the first row wins
    path = _excel_csv(tmp_path / "clients.csv", rows)
    out: dict[str, Any] = {}
    for reader in ("child", "inline"):
        proc = cli({**env, "SMSC_NAMESPACE": reader, "SMSC_INTAKE_READER": reader}, "enqueue", "--csv", str(path),
                   "--template", template, *options, "--campaign-id", "same", "--json")
        # Left out: what the clock said (the due times) and what Redis's disk said (the commit's durability,
        # and its warning on stderr when a busy machine's fsync is late): neither is the reader's.
        receipt = {k: v for k, v in last_json(proc).items() if not k.endswith("_due_ms") and k != "durable"}
        stderr = [line for line in proc.stderr.splitlines() if "a crash of Redis now may lose it" not in line]
        keys = Keys(reader)
        batches = [redis_client.hmget(keys.batch(batch_ref("same", n)), ["phones", "texts"])
                   for n in range(receipt["batches"])]
        out[reader] = (receipt, stderr, batches)
    assert out["child"] == out["inline"]
    receipt, stderr, batches = out["child"]
    assert (receipt["total"], receipt["invalid"], receipt["duplicates"]) == (2_597, 2, 1)
    assert sum(f"{path}:{n}: " in line for line in stderr for n in (8, 31, 1502)) == 3  # line 45 holds two lines
    assert len(batches) >= 5 and all(phones and texts for phones, texts in batches)
    assert sum(len(json.loads(texts)) for _, texts in batches) == 2_597
    texts = [t for _, raw in batches for t in json.loads(raw).values()]
    translit = int(options[1]) if options else 0
    assert receipt["sms"] == sum(count_parts(t, translit=translit) for t in texts)
    assert (receipt["sms"] != sum(map(text_parts, texts))) == bool(options)  # translit changed the count


def test_a_campaign_the_balance_cannot_pay_is_refused_unless_allow_partial(
        sim_env: Any, redis_client: Any, tmp_path: Path) -> None:
    env, sim = sim_env(extra_args=["--balance", "100"])
    phones = tmp_path / "p.txt"
    phones.write_text("".join(f"+7915{i:07d}\n" for i in range(200)))  # 200 SMS at 1.50: 300.00
    proc = cli(env, "enqueue", "--phones-file", str(phones), "--message", "hello", check=False)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert "balance 100" in line and "300" in line and "--allow-partial" in line and "Traceback" not in proc.stderr
    assert _nothing_queued(redis_client)
    receipt = last_json(cli(env, "enqueue", "--phones-file", str(phones), "--message", "hello", "--allow-partial",
                            "--json"))
    assert receipt["total"] == 200
    assert sim.summary()["messages"] == 0
    # an urgent code is never held up by the check (nor a campaign below SMSC_BALANCE_CHECK_MIN)
    urgent = last_json(cli(env, "enqueue", "--phones-file", str(phones), "--message", "code", "--priority", "urgent",
                           "--json"))
    assert urgent["total"] == 200


def test_a_stop_listed_number_is_suppressed_at_intake_in_any_spelling(sim_env: Any, tmp_path: Path) -> None:
    env, _ = sim_env()
    cli(env, "stoplist", "add", "89160000002", "--reason", "asked to stop")
    phones = tmp_path / "p.txt"
    phones.write_text("+79160000001\n+79160000002\n+79160000003\n")
    enq = cli(env, "enqueue", "--phones-file", str(phones), "--message", "hi", "--json")
    receipt = last_json(enq)
    assert (receipt["total"], receipt["suppressed"]) == (2, 1)
    assert "on the stop list" in enq.stderr
    st = last_json(cli(env, "status", receipt["campaign_id"], "--json"))
    assert st["suppressed"] == 1 and st["total"] == 2


def test_wrong_credentials_found_by_the_balance_check_refuse_the_enqueue_and_stop_the_account_once(
        sim_env: Any, redis_client: Any, tmp_path: Path) -> None:
    env, sim = sim_env()
    env = {**env, "SMSC_PASSWORD": "a-typo"}
    phones = tmp_path / "p.txt"
    phones.write_text("".join(f"+7917{i:07d}\n" for i in range(200)))
    proc = cli(env, "enqueue", "--phones-file", str(phones), "--message", "hello", check=False)
    assert proc.returncode == 2 and "credentials" in proc.stderr and "Traceback" not in proc.stderr
    assert "a-typo" not in proc.stderr
    assert _nothing_queued(redis_client)
    # the login is stopped: a second enqueue does not try the wrong password again
    again = cli(env, "enqueue", "--phones-file", str(phones), "--message", "hello", "--json", check=False)
    assert sim.summary()["errors_answered"] == {"2": 1}
    assert "balance not checked" in again.stderr
