"""The requests of SMSC's official client libraries (``smsc_api.py``, ``smsc_api.php``), replayed as their
code builds them, over a real socket with ``urllib`` as the Python library does, and read as they read
the answers.

What those libraries send (their public source, read for this): GET with the login and password in the
query string (POST of the same string when it is longer than 2,000 characters, or always with their
``SMSC_POST``); ``fmt=1`` and ``charset=`` first (``utf-8`` from Python, ``windows-1251`` from PHP by
default); a send is ``cost=3&phones=..&mes=..&translit=0&id=0`` (``id=0`` when the caller gives none);
a cost request ``cost=1&phones=..&mes=..&translit=0``; a status request ``phone=..&id=..&all=0``; a
balance request nothing more (the query ends with ``&``). Python quotes with ``urllib.parse.quote``
(UTF-8, space = ``%20``), PHP with ``urlencode`` (bytes of the page's charset, space = ``+``). They split
the answer on ``,`` (on newlines first for a status request with several ids).
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from worker.sim import SimConfig, Simulator
from worker.sim.server import SimServer, serve

LOGIN, PASSWORD = "smsc-user", "p@ss w&rd:1"  # characters that must be escaped in a URL
PHONE = "79991234567"


@pytest.fixture
def server() -> Iterator[SimServer]:
    with serve(Simulator(SimConfig(login=LOGIN, password=PASSWORD, balance="100"))) as srv:
        yield srv


def _fetch(url: str, data: bytes | None = None) -> str:
    with urllib.request.urlopen(url, data, timeout=10) as answer:  # noqa: S310 - a local http URL
        assert answer.status == 200
        return bytes(answer.read()).decode("utf-8")


# -- smsc_api.py -------------------------------------------------------------------------------------


class PythonLibrary:
    """The request building of ``smsc_api.py`` (SMSC_POST False, SMSC_CHARSET utf-8), aimed at ``base``."""

    def __init__(self, base: str, *, fmt: int = 1) -> None:
        self.base, self.fmt = base, fmt
        self.sent = ("", "", "")  # method, URL, query string of the last request

    def call(self, cmd: str, arg: str = "") -> list[str]:
        url = f"{self.base}/sys/{cmd}.php"
        arg = f"login={quote(LOGIN)}&psw={quote(PASSWORD)}&fmt={self.fmt}&charset=utf-8&{arg}"
        if len(arg) > 2000:
            self.sent = ("POST", url, arg)
            body = _fetch(url, arg.encode("utf-8"))  # urllib sends it as a form
        else:
            self.sent = ("GET", url, arg)
            body = _fetch(f"{url}?{arg}")
        return body.split(",")

    def send_sms(self, phones: str, message: str, *, id: int | str = 0, sender: str | None = None) -> list[str]:
        arg = f"cost=3&phones={quote(phones)}&mes={quote(message)}&translit=0&id={id}"
        return self.call("send", arg + (f"&sender={quote(sender)}" if sender is not None else ""))

    def get_sms_cost(self, phones: str, message: str) -> list[str]:
        return self.call("send", f"cost=1&phones={quote(phones)}&mes={quote(message)}&translit=0")

    def get_status(self, id: int | str, phone: str, all: int = 0) -> list[str]:
        return self.call("status", f"phone={quote(phone)}&id={id}&all={all}")

    def get_balance(self) -> str | bool:
        m = self.call("balance")
        return False if len(m) > 1 else m[0]


def test_python_library_send_sms_with_its_default_id_0_is_sent_and_answered_as_it_reads(
        server: SimServer) -> None:
    lib = PythonLibrary(server.url)
    m = lib.send_sms(PHONE, "Привет, мир! 100% & more")
    assert lib.sent[0] == "GET" and "psw=p%40ss%20w%26rd%3A1" in lib.sent[2] and "&id=0" in lib.sent[2]
    sms_id, cnt, cost, balance = m  # (<id>, <cnt>, <cost>, <balance>)
    assert int(sms_id) > 0 and (cnt, cost, balance) == ("1", "1.50", "98.50")
    assert [(r["id"], r["phone"], r["text"]) for r in server.sim.record()] == [
        (sms_id, PHONE, "Привет, мир! 100% & more")]


def test_python_library_send_sms_with_an_id_and_a_sender(server: SimServer) -> None:
    lib = PythonLibrary(server.url)
    assert lib.send_sms(f"{PHONE},+79991234568", "test", id=42, sender="sms") == ["42", "2", "3.00", "97.00"]


def test_python_library_errors_are_id_and_minus_code(server: SimServer) -> None:
    lib = PythonLibrary(server.url)
    assert lib.send_sms("123", "bad number", id=7) == ["7", "-7"]
    assert lib.send_sms(PHONE, "", id=8) == ["0", "-1"]  # an empty message: parameters error
    assert lib.get_sms_cost("123", "bad number") == ["0", "-7"]
    wrong = PythonLibrary(server.url)
    server.sim.configure(password="changed")
    assert wrong.get_balance() is False
    assert wrong.call("balance") == ["0", "-2"]


def test_python_library_switches_to_post_above_2000_characters(server: SimServer) -> None:
    server.sim.configure(balance="1000")
    lib = PythonLibrary(server.url)
    phones = ",".join(f"7999{n:07d}" for n in range(200))
    m = lib.send_sms(phones, "to a crowd")
    assert lib.sent[0] == "POST" and len(lib.sent[2]) > 2000
    assert m[1:] == ["200", "300.00", "700.00"]
    assert len(server.sim.phones()) == 200


def test_python_library_get_sms_cost_status_and_balance(server: SimServer) -> None:
    lib = PythonLibrary(server.url)
    assert lib.get_sms_cost(PHONE, "x" * 161) == ["3.00", "2"]  # (<cost>, <cnt>): two parts
    assert server.sim.summary()["messages"] == 0
    sms_id = lib.send_sms(PHONE, "status?")[0]
    status, changed, err = lib.get_status(sms_id, PHONE)  # (<status>, <time>, <err>)
    assert (status, err) == ("1", "0") and int(changed) > 1_600_000_000
    assert lib.get_status(999, PHONE) == ["-3", "0", "0"]
    assert lib.get_balance() == "98.50"


def test_python_library_get_status_when_not_found_is_an_error_with_status_not_found_error(
        server: SimServer) -> None:
    server.sim.configure(status_not_found_error=True)
    assert PythonLibrary(server.url).get_status(999, PHONE) == ["0", "-3"]  # (0, -<error>)


@pytest.mark.parametrize(("fmt", "balance"), [
    (0, "100.00"), (1, "100.00"), (2, "<result><balance>100.00</balance></result>"),
    (3, '{\n"balance": "100.00"\n}'),
])
def test_the_same_requests_in_every_fmt(server: SimServer, fmt: int, balance: str) -> None:
    lib = PythonLibrary(server.url, fmt=fmt)
    assert ",".join(lib.call("balance")) == balance
    sent = ",".join(lib.send_sms(PHONE, "fmt", id=5))
    assert sent == {0: "OK - 1 SMS, ID - 5, COST - 1.50, BALANCE - 98.50", 1: "5,1,1.50,98.50",
                    2: "<result><id>5</id><cnt>1</cnt><cost>1.50</cost><balance>98.50</balance></result>",
                    3: '{\n"id": 5,\n"cnt": 1,\n"cost": "1.50",\n"balance": "98.50"\n}'}[fmt]


# -- smsc_api.php ------------------------------------------------------------------------------------


def php_urlencode(value: str, charset: str = "windows-1251") -> str:
    """PHP's ``urlencode`` of a string held in ``charset``: ``-_.`` and alphanumerics kept, space ``+``."""
    out = []
    for byte in value.encode(charset):
        char = chr(byte)
        out.append(char if char.isascii() and (char.isalnum() or char in "-_.") else
                   "+" if char == " " else f"%{byte:02X}")
    return "".join(out)


class PhpLibrary:
    """The request building of ``smsc_api.php`` (SMSC_POST 0, SMSC_CHARSET windows-1251), with curl."""

    charset = "windows-1251"

    def __init__(self, base: str) -> None:
        self.base = base
        self.method = ""

    def call(self, cmd: str, arg: str = "") -> list[str]:
        url = (f"{self.base}/sys/{cmd}.php?login={php_urlencode(LOGIN)}&psw={php_urlencode(PASSWORD)}"
               f"&fmt=1&charset={self.charset}&{arg}")
        if len(url) > 2000:
            self.method = "POST"
            url, post = url.split("?", 1)
            body = _fetch(url, post.encode("ascii"))  # curl posts the string as a form
        else:
            self.method = "GET"
            body = _fetch(url)
        delim = "\n" if cmd == "status" and "," in _param(arg, "id")[1:] else ","
        return body.split(delim)

    def send_sms(self, phones: str, message: str, id: int | str = 0) -> list[str]:
        return self.call("send", f"cost=3&phones={php_urlencode(phones)}&mes={php_urlencode(message)}"
                                 f"&translit=0&id={id}")

    def get_sms_cost(self, phones: str, message: str) -> list[str]:
        return self.call("send", f"cost=1&phones={php_urlencode(phones)}&mes={php_urlencode(message)}&translit=0")

    def get_status(self, id: str, phone: str, all: int = 0) -> list[str] | list[list[str]]:
        m = self.call("status", f"phone={php_urlencode(phone)}&id={php_urlencode(id)}&all={all}")
        if "," not in id[1:]:
            return m
        if len(m) == 1 and m[0].find("-") == 2:
            return m[0].split(",")
        return [line.split(",") for line in m]


def _param(query: str, name: str) -> str:
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key == name:
            return value.replace("%2C", ",")
    return ""


def test_php_library_sends_windows_1251_text_and_reads_the_answers(server: SimServer) -> None:
    lib = PhpLibrary(server.url)
    sms_id, cnt, cost, balance = lib.send_sms(f"{PHONE},79991234568", "Ваш пароль: 123")
    assert lib.method == "GET" and int(sms_id) > 0 and (cnt, cost, balance) == ("2", "3.00", "97.00")
    assert [r["text"] for r in server.sim.record()] == ["Ваш пароль: 123"] * 2
    assert lib.get_sms_cost(PHONE, "Вы успешно зарегистрированы!") == ["1.50", "1"]
    assert lib.get_status(sms_id, PHONE)[0] == "1"
    assert lib.get_status(f"{sms_id},{sms_id}", f"{PHONE},79991234568") == [
        ["1", lib.get_status(sms_id, "79991234568")[1], "0"]] * 2
    assert lib.call("balance") == ["97.00"]


def test_php_library_posts_above_2000_characters(server: SimServer) -> None:
    server.sim.configure(balance="1000")
    lib = PhpLibrary(server.url)
    long_text = "Длинный текст рассылки. " * 40  # 960 characters, each Cyrillic byte %XX
    sms_id, cnt, _, _ = lib.send_sms(PHONE, long_text)
    assert lib.method == "POST" and int(sms_id) > 0 and cnt == "15"  # 960 UCS-2 characters: 15 parts of 67
    assert server.sim.record()[0]["text"] == long_text


def test_php_library_reads_an_error_of_a_list_status_request(server: SimServer) -> None:
    lib = PhpLibrary(server.url)
    server.sim.configure(password="changed")
    assert lib.get_status("1,2", f"{PHONE},79991234568") == ["0", "-2"]
