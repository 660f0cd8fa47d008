"""The benchmark's personal texts (issue 10): a CSV of N rows and a template, through the real intake and
the running workers, against the bare load generator sending the same requests.

- :func:`write_personal_csv` — ``phone;name;order;city`` rows (Russian names and cities, one order number a
  row, so every text is its own): every ``invalid_every``-th phone invalid (2 %), every
  ``duplicate_every``-th an earlier number spelled another way (1 %, the first row wins). With
  :data:`TEMPLATE` (one placeholder per column, 77 characters) each text is 72-90 characters of
  Cyrillic: UCS-2, 2 parts. Returns the counts and the mean UTF-8 bytes of the texts queued.
- :func:`send_personal` — the campaign enqueued (``smsc-mailer enqueue --csv``, a child) while no clock
  runs, then sent by the stack's workers once the clock starts: :func:`worker.dev.bench.send.send_campaign`
  with that enqueue (first to last message the simulator recorded, slot use, CPU, lag).
- :func:`list_bodies` — that campaign's requests as the workers made them: each batch's ``texts`` (JSON
  ``{phone: text}`` in batch order), one ``list`` line per text; :func:`bare_personal` has the bare load
  generator send exactly those, 14 in flight.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from scheduler.keys import Keys, batch_ref
from worker.dev.bench import load
from worker.dev.bench.profile import py_spy
from worker.dev.bench.profile import summary as profile_summary
from worker.dev.bench.send import SLOTS, cli, log, round_or_none, send_campaign
from worker.dev.phones import INVALID, number, spell
from worker.dev.stack import SimulatorProcess, Stack

__all__ = ["FIRST_NUMBER", "TEMPLATE", "bare_personal", "bodies_for", "enqueue_argv", "list_bodies",
           "profiled_intake", "render",
           "send_personal", "write_personal_csv"]

#: One placeholder per column; every text it renders from :func:`write_personal_csv` is 2 UCS-2 parts.
TEMPLATE = "{{ name }}, заказ №{{ order }} ждёт вас в пункте выдачи, г. {{ city }}. Ждём!"
#: The numbers of the personal CSV start at the ``FIRST_NUMBER``-th distinct one: none of the other
#: workloads' numbers (0.., 500M.., 550M.., 600M.., 700M.., 800M..), so no guard of ours holds them back.
FIRST_NUMBER = 300_000_000

_MEN = (("Иван", "Петрович"), ("Сергей", "Иванович"), ("Дмитрий", "Олегович"), ("Александр", "Юрьевич"),
        ("Константин", "Сергеевич"), ("Юрий", "Александрович"), ("Михаил", "Константинович"))
_WOMEN = (("Анна", "Петровна"), ("Ольга", "Сергеевна"), ("Мария", "Юрьевна"), ("Екатерина", "Олеговна"),
          ("Наталья", "Ивановна"), ("Татьяна", "Александровна"), ("Елена", "Дмитриевна"))
_CITIES = ("Пермь", "Казань", "Москва", "Самара", "Воронеж", "Красноярск", "Новосибирск", "Екатеринбург",
           "Санкт-Петербург", "Ростов-на-Дону", "Нижний Новгород", "Челябинск", "Тюмень")


def _values(i: int) -> tuple[str, str, str]:
    """Row ``i``'s name, order number and city."""
    first, patronymic = (_MEN if i % 2 else _WOMEN)[(i // 2) % 7]
    return f"{first} {patronymic}", str(10_000_000 + i), _CITIES[(i * 7 + i // 13) % len(_CITIES)]


def render(name: str, order: str, city: str) -> str:
    """:data:`TEMPLATE` with these values, as Jinja2 renders it (plain substitution: no filter, no test)."""
    return TEMPLATE.replace("{{ name }}", name).replace("{{ order }}", order).replace("{{ city }}", city)


def write_personal_csv(path: Path, rows: int, *, first: int = FIRST_NUMBER, invalid_every: int = 50,
                       duplicate_every: int = 100) -> dict[str, Any]:
    """Write a header and ``rows`` rows; returns rows, unique, invalid, duplicates and ``text_bytes_mean``
    (UTF-8 bytes of the texts of the unique rows, the ones queued) and ``text_chars_max``/``min``."""
    unique = invalid = dups = text_bytes = 0
    chars_min, chars_max = 10**9, 0
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write("phone;name;order;city\n")
        buf: list[str] = []
        for i in range(rows):
            name, order, city = _values(i)
            if invalid_every and i % invalid_every == invalid_every - 1:
                phone = INVALID[(i // invalid_every) % len(INVALID)]
                invalid += 1
            elif duplicate_every and unique and i % duplicate_every == duplicate_every // 2:
                j = (i * 7919) % unique  # an earlier number, in another spelling: that row's text is sent
                phone = spell(number(first + j), j + 1)
                dups += 1
            else:
                phone = spell(number(first + unique), unique)
                unique += 1
                text = render(name, order, city)
                text_bytes += len(text.encode())
                chars_min, chars_max = min(chars_min, len(text)), max(chars_max, len(text))
            buf.append(f"{phone};{name};{order};{city}")
            if len(buf) >= 10_000:
                f.write("\n".join(buf) + "\n")
                buf.clear()
        if buf:
            f.write("\n".join(buf) + "\n")
    return {"rows": rows, "unique": unique, "invalid": invalid, "duplicates": dups,
            "text_bytes_mean": round(text_bytes / max(unique, 1), 1), "text_chars_min": chars_min,
            "text_chars_max": chars_max, "file_bytes": path.stat().st_size}


def enqueue_argv(table: Path, *extra: str) -> list[str]:
    """``smsc-mailer enqueue --csv TABLE --template TEMPLATE --json`` (the phone column is ``phone``)."""
    return cli("enqueue", "--csv", str(table), "--template", TEMPLATE, "--json", *extra)


def profiled_intake(argv: list[str], env: dict[str, str], workdir: Path, out: Path) -> dict[str, Any]:
    """``argv`` (an enqueue) run under ``py-spy record`` (100 Hz, raw collapsed stacks to ``out``): the
    functions with the largest share of its samples. Its figures are not the measured ones (py-spy slows it)."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed: pip install '.[dev]'")
    out.parent.mkdir(parents=True, exist_ok=True)
    m = load.run_measured([exe, "record", "-r", "100", "-f", "raw", "-o", str(out), "--", *argv], env=env,
                          workdir=workdir, timeout_s=900)
    if m.returncode != 0:
        raise RuntimeError(f"profiled enqueue failed ({m.returncode}): {m.stderr_tail}")
    return {"file": str(out), "wall_s": round(m.wall_s, 2), "top": profile_summary([out], top=30)}


def bodies_for(seconds: float) -> int:
    """How many requests the bare load generator can send in ``seconds`` at most (its own bound)."""
    return SLOTS * (int(seconds / 0.2 * 1.5) + 5)


def list_bodies(r: redis.Redis, keys: Keys, cid: str, batches: int, *,
                most: int | None = None) -> list[tuple[str, int]]:
    """The campaign's first ``most`` batches as ``list`` values with their recipients: one line per text,
    its phones in batch order (:meth:`worker.sending._Execution.lines`, no sender: the campaign has none)."""
    out: list[tuple[str, int]] = []
    for n in range(batches if most is None else min(batches, most)):
        raw = r.hget(keys.batch(batch_ref(cid, n)), "texts")
        if not raw:
            continue
        grouped: dict[str, list[str]] = {}
        texts: dict[str, str] = json.loads(raw)
        for phone, text in texts.items():
            grouped.setdefault(text, []).append(phone)
        value = "\n".join(",".join(ps) + ":" + text.replace("\n", "\\n") for text, ps in grouped.items())
        out.append((value, len(texts)))
    return out


def send_personal(stack: Stack, r: redis.Redis, sim: SimulatorProcess, table: Path,
                  timeout_s: float, profile: Path | None = None) -> dict[str, Any]:
    """Enqueue ``table`` with :data:`TEMPLATE` while no clock runs, start the clock, wait for the end: the
    figures of :func:`~worker.dev.bench.send.send_campaign` (its ``enqueue_argv``), ``profile`` included."""
    return send_campaign(stack, r, sim, None, None, timeout_s, profile, enqueue_argv=enqueue_argv(table),
                         label="personal")


def bare_personal(sim: SimulatorProcess, bodies: Sequence[tuple[str, int]], seconds: float) -> dict[str, Any]:
    """The bare load generator sending ``bodies`` (:func:`list_bodies`), ``SLOTS`` in flight, for at most
    ``seconds``; the simulator forgets the campaign first (the same numbers and texts are sent again)."""
    sim.reset()
    sampler = load.Sampler(sim.url).start()
    started = time.time()
    res = load.bare_load(sim.url, login=sim.login, password=sim.password, text="",
                         batch_size=max((n for _, n in bodies), default=0), slots=SLOTS, seconds=seconds,
                         first_number=0, lists=bodies)
    sampler.stop()
    res["slot_use"] = round_or_none(sampler.slot_use(started + 0.5, started + res["seconds"] - 0.5, SLOTS), 3)
    breaches = sim.summary()["breaches"]
    res["breaches"] = sum(breaches.values())
    res["breaches_by_rule"] = {k: v for k, v in breaches.items() if v}
    log(f"bare load generator, personal texts: {res}")
    return res
