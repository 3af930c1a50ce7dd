"""TOKENS_FILE: parsing, sha256 entries, reload without restart, and namespace resolution.

No test sleeps: the table takes a clock, and the tests move it past the one-second check interval.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

import pytest
from flask import Blueprint, Flask, Response, request
from hypothesis import given, settings
from hypothesis import strategies as st

from conf.errors import Forbidden as RefusedRight
from service.api import tokens
from service.api.auth import admit
from service.api.endpoint import Ok, endpoint
from service.api.tokens import (
    RELOAD_INTERVAL_S,
    Forbidden,
    Grant,
    TokensFileError,
    TokenTable,
    Unauthorized,
    authenticate,
    namespace_for,
)
from service.store.filters import NamespaceError

SECRET = "Sup3r-Secret_token.42~"
OTHER = "an0ther-token"


def sha(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = RELOAD_INTERVAL_S) -> None:
        self.now += seconds


def write(path: Path, text: str) -> Path:
    """Replace the file atomically, as the module docstring asks operators to."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


@pytest.fixture
def clock() -> Clock:
    return Clock()


# --- parsing -----------------------------------------------------------------------------


def test_parses_tokens_comments_blank_lines_and_hashes(tmp_path: Path) -> None:
    text = (
        "\ufeff# imgsim tokens\n"
        "\n"
        f"{SECRET}\tshop-1   read   # the shop's search box\n"
        f"   {sha(OTHER).upper().replace('SHA256:', 'sha256:')} - write\r\n"
        "   # indented comment\n"
        f"adm#in * admin\n"
        f"reader * read\n"
    )
    table = TokenTable.from_file(write(tmp_path / "tokens", text))
    assert len(table) == 4
    assert table.lookup(SECRET) == Grant("shop-1", frozenset({"read"}))
    assert table.lookup(OTHER) == Grant("", frozenset({"read", "write"}))  # '-' is the default namespace ""
    assert table.lookup("adm#in") == Grant.admin()
    assert table.lookup("reader") == Grant(None, frozenset({"read"}))
    for unknown in ["", "adm", sha(OTHER), SECRET + " ", SECRET.lower(), "\ud800"]:
        assert table.lookup(unknown) is None


MALFORMED = [
    (f"{SECRET} shop-1\n", 1, "expected 3 fields"),
    (f"ok * read\n\n{SECRET} shop-1 read extra\n", 3, "expected 3 fields"),
    (f"# c\n{SECRET} split here read\n", 2, "expected 3 fields"),
    ("sha256:" + "a" * 63 + " * read\n", 1, "64 hexadecimal digits"),
    ("sha256:" + "g" * 64 + " * read\n", 1, "64 hexadecimal digits"),
    (f"tøken{SECRET} * read\n", 1, "printable ASCII"),
    (f"{SECRET} -shop read\n", 1, "field 2"),
    (f"{SECRET} .. read\n", 1, "field 2"),
    (f"{SECRET} {'n' * 65} read\n", 1, "field 2"),
    (f"x * read\n{SECRET} shop-1 Read\n", 2, "field 3"),
    (f"{SECRET} shop-1 {SECRET}\n", 1, "field 3"),
    (f"{SECRET} shop-1 admin\n", 1, "admin token acts in every namespace"),
    (f"{SECRET} a read\nx b read\n{sha(SECRET)} c write\n", 3, "repeats the token of line 1"),
]


@pytest.mark.parametrize(("text", "line", "words"), MALFORMED)
def test_malformed_line_names_file_and_line_never_the_token(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = write(tmp_path / "tokens.txt", text)
    with pytest.raises(TokensFileError) as info:
        TokenTable.from_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}, line {line}: ") and words in message
    assert info.value.line == line and info.value.path == str(path)
    assert SECRET not in message and SECRET.lower() not in message and "split" not in message


def test_unreadable_or_non_utf8_file(tmp_path: Path) -> None:
    with pytest.raises(TokensFileError, match="cannot be read"):
        TokenTable.from_file(tmp_path / "absent")
    path = tmp_path / "latin1"
    path.write_bytes(b"ok * read\n" + SECRET.encode() + b"\xe9 * read\n")
    with pytest.raises(TokensFileError, match=r"line 2: is not UTF-8 text") as info:
        TokenTable.from_file(path)
    assert SECRET not in str(info.value)


def test_empty_file_refuses_everyone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    table = TokenTable.from_file(write(tmp_path / "t", "# nobody yet\n"))
    assert len(table) == 0 and table.lookup(SECRET) is None
    assert "holds no tokens" in caplog.text


def test_single_admin() -> None:
    table = TokenTable.single_admin(SECRET)
    assert table.lookup(SECRET) == Grant.admin()
    assert table.lookup(SECRET[:-1]) is None and table.lookup("") is None
    assert not table.reload_if_changed()
    with pytest.raises(ValueError):
        TokenTable.single_admin("")


def test_every_entry_is_compared_whichever_matches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Constant time per entry: the first entry matching costs as many comparisons as no match at all."""
    lines = [f"tok{i} ns{i} read" for i in range(50)]
    table = TokenTable.from_file(write(tmp_path / "t", "\n".join(lines)))
    calls: list[tuple[bytes, bytes]] = []
    real = tokens.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", counting)
    for presented, namespace in [("tok0", "ns0"), ("tok49", "ns49"), ("nope", None)]:
        calls.clear()
        grant = table.lookup(presented)
        assert (grant.namespace if grant else None) == namespace
        assert len(calls) == 50 and all(len(a) == len(b) == 32 for a, b in calls)


# --- reload ------------------------------------------------------------------------------


def test_revoked_token_is_refused_after_the_file_changes(tmp_path: Path, clock: Clock) -> None:
    path = write(tmp_path / "t", f"{SECRET} shop-1 write\n{OTHER} shop-2 read\n")
    table = TokenTable.from_file(path, clock=clock)
    assert table.lookup(SECRET) is not None
    write(path, f"{OTHER} shop-2 read\nnewcomer shop-3 write\n")
    clock.tick(RELOAD_INTERVAL_S / 2)
    assert table.lookup(SECRET) is not None  # checked at most once a second
    clock.tick(RELOAD_INTERVAL_S / 2)
    assert table.lookup(SECRET) is None
    assert table.lookup("newcomer") == Grant("shop-3", frozenset({"read", "write"}))
    assert table.lookup(OTHER) == Grant("shop-2", frozenset({"read"}))


def test_in_place_edit_is_noticed(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "t"
    path.write_text(f"{SECRET} shop-1 write\n")
    table = TokenTable.from_file(path, clock=clock)
    with open(path, "w") as handle:  # same inode, new size and mtime
        handle.write(f"{SECRET} shop-1 read\n")
    clock.tick()
    assert table.lookup(SECRET) == Grant("shop-1", frozenset({"read"}))


def test_unchanged_file_is_not_reread(tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    table = TokenTable.from_file(write(tmp_path / "t", f"{SECRET} * read\n"), clock=clock)
    monkeypatch.setattr(tokens, "parse_tokens", lambda *a: pytest.fail("re-parsed an unchanged file"))
    for _ in range(3):
        clock.tick()
        assert table.lookup(SECRET) is not None


def test_failed_reload_keeps_the_previous_table(tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "t", f"{SECRET} shop-1 write\n")
    table = TokenTable.from_file(path, clock=clock)
    write(path, f"# comment\n{OTHER} shop-1 write\n{SECRET} shop 1 write\n")  # a slip while editing
    caplog.set_level(logging.INFO, logger=tokens.__name__)
    for _ in range(3):
        clock.tick()
        assert table.lookup(SECRET) == Grant("shop-1", frozenset({"read", "write"}))
        assert table.lookup(OTHER) is None
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # one log line per problem, not one a second
    assert f"{path}, line 3: expected 3 fields" in errors[0].getMessage()
    assert "keeping the previous 1 tokens" in errors[0].getMessage()
    assert SECRET not in caplog.text and OTHER not in caplog.text
    write(path, f"{OTHER} shop-1 write\n")  # fixed
    clock.tick()
    assert table.lookup(OTHER) is not None and table.lookup(SECRET) is None


def test_deleted_file_keeps_the_previous_table(tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "t", f"{SECRET} shop-1 read\n")
    table = TokenTable.from_file(path, clock=clock)
    path.unlink()
    clock.tick()
    assert table.lookup(SECRET) is not None
    assert "cannot be read; keeping the previous 1 tokens" in caplog.text
    write(path, f"{OTHER} shop-1 read\n")
    assert table.reload_if_changed()
    assert table.lookup(SECRET) is None and table.lookup(OTHER) is not None


def test_lookups_during_reloads_never_fail(tmp_path: Path) -> None:
    path = write(tmp_path / "t", f"{SECRET} shop-1 read\n")
    table = TokenTable.from_file(path)
    failures: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                grant = table.lookup(SECRET)
                assert grant is None or grant.namespace == "shop-1"
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(20):
        write(path, f"{SECRET} shop-1 read\n" if i % 2 else f"{OTHER} shop-1 read\n")
        table.reload_if_changed()
    stop.set()
    for t in threads:
        t.join()
    assert not failures


# --- authenticate, rights and namespace_for --------------------------------------------------


def test_authenticate(tmp_path: Path) -> None:
    table = TokenTable.from_file(write(tmp_path / "t", f"{SECRET} shop-1 read\n"))
    assert authenticate(None, None) == Grant.admin()  # no token configured: today's open service
    assert authenticate(table, SECRET) == Grant("shop-1", frozenset({"read"}))
    for presented, reason in [(None, "token_missing"), ("", "token_missing"), (SECRET + "x", "token_invalid")]:
        with pytest.raises(Unauthorized) as info:
            authenticate(table, presented)
        assert info.value.reason == reason and SECRET not in info.value.msg


READ_A = Grant("shop-a", frozenset({"read"}))
WRITE_A = Grant("shop-a", frozenset({"read", "write"}))
WRITE_DEFAULT = Grant("", frozenset({"read", "write"}))
READ_ANY = Grant(None, frozenset({"read"}))


def test_bound_token_acts_only_in_its_namespace() -> None:
    assert namespace_for(WRITE_A, None) == "shop-a"
    assert namespace_for(WRITE_A, "shop-a") == "shop-a"
    assert namespace_for(WRITE_DEFAULT, None) == ""
    assert namespace_for(WRITE_DEFAULT, "") == ""
    for other in ["shop-b", "", "SHOP-A", "shop-a ", " shop-a", "shop-a\x00", "*", "-", 0, ["shop-a"], {"x": 1}]:
        with pytest.raises(Forbidden) as info:
            namespace_for(WRITE_A, other)
        assert info.value.reason == "namespace_forbidden"
    with pytest.raises(Forbidden):
        namespace_for(WRITE_DEFAULT, "shop-a")


def test_rights() -> None:
    for right in ["write", "admin"]:
        assert not READ_A.allows(right)
    assert WRITE_A.allows("write") and not WRITE_A.allows("admin")
    assert not READ_ANY.allows("write")
    with pytest.raises(ValueError, match="unknown right"):
        endpoint(Blueprint("t", __name__), "/x", right="search", body=None, ok=Ok(int, "n"), errors=(), tag="t")
    assert tokens.ACTION_RIGHTS["delete"] == "write" and tokens.ACTION_RIGHTS["list"] == "read"


def test_the_token_check_refuses_a_token_without_the_declared_right(tmp_path: Path) -> None:
    """admit() is the one check of a right: the right comes from the route's @endpoint declaration."""
    blueprint = Blueprint("t", __name__)

    @endpoint(blueprint, "/write-only", right="write", body=None, ok=Ok(int, "n"), errors=(403,), tag="t")
    def write_only() -> tuple[Response, int]:
        raise AssertionError("never reached")

    app = Flask(__name__)
    app.register_blueprint(blueprint)
    table = TokenTable.from_file(write(tmp_path / "t", f"{SECRET} shop-1 read\n"))
    with (
        app.test_request_context("/write-only", method="POST", headers={"token": SECRET}),
        pytest.raises(RefusedRight) as info,
    ):
        admit(request, table)
    assert info.value.reason == "right_missing" and "write right" in info.value.msg


def test_any_namespace_token_chooses() -> None:
    assert namespace_for(Grant.admin(), None) == ""
    assert namespace_for(Grant.admin(), "shop-b") == "shop-b"
    assert namespace_for(READ_ANY, "shop-b") == "shop-b"
    for bad in ["*", "-", "../x", "a b", 3, "x" * 65]:
        with pytest.raises(NamespaceError):
            namespace_for(Grant.admin(), bad)


@settings(max_examples=300, deadline=None)
@given(
    bound=st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}", fullmatch=True) | st.just(""),
    requested=st.none() | st.text(max_size=70) | st.integers() | st.lists(st.text(max_size=3), max_size=2),
)
def test_a_bound_token_never_reaches_another_namespace(bound: str, requested: object) -> None:
    grant = Grant(bound, frozenset({"read", "write"}))
    try:
        acted_in = namespace_for(grant, requested)
    except Forbidden:
        assert requested is not None and requested != bound
        return
    assert acted_in == bound
