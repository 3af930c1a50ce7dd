"""Tokens bound to namespaces and rights: the TOKENS_FILE of issue 12, and the legacy single TOKEN.

File format, one token per line, three fields separated by white space:

    # token (or sha256:<64 hex digits of its SHA-256>)   namespace   rights
    8f3b...e1                                               shop-1      write
    sha256:9c56cc51b374c3ba189210d5b6d4bf57790d351c96c47c02190ecf1e430635ab  shop-2  read
    sha256:...                                              -           write   # the default namespace ""
    sha256:...                                              *           admin

* token: printable ASCII without spaces (it travels in an HTTP header), or `sha256:` and the hex SHA-256
  of the token's bytes (`printf %s "$TOKEN" | sha256sum`), so the file need not hold secrets.
* namespace: a name matching service.store.filters.NAMESPACE_RE, `-` for the default namespace ""
  (bogv's single catalog; no namespace name can be `-`), or `*` for every namespace (the request
  then chooses one with its `namespace` field, default "").
* rights: `read` (search, get, count, list), `write` (read plus add and delete) or `admin` (every
  right in every namespace, so its namespace must be `*`).
* A field starting with `#` starts a comment that runs to the end of the line; blank lines are ignored.
  A token must not start with `#`.

A malformed line raises TokensFileError naming the file, the line number and the field at fault; no
message or log line ever contains a field's text, since a mangled line may hold a token in any field.
The file is checked for changes (inode, size, mtime, ctime) at most once a second and re-read when it
changed, so revoking a token needs no restart; a re-read that fails keeps the previous tokens and logs
an error. Replace the file atomically (write a temporary file, then rename it over the old one).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from service.store.filters import DEFAULT_NAMESPACE, NamespaceError, check_namespace

log = logging.getLogger(__name__)

READ, WRITE, ADMIN = "read", "write", "admin"
RIGHTS: dict[str, frozenset[str]] = {
    READ: frozenset({READ}),
    WRITE: frozenset({READ, WRITE}),
    ADMIN: frozenset({READ, WRITE, ADMIN}),
}
# The right each use case needs; the HTTP layer looks its endpoint up here.
ACTION_RIGHTS = {"search": READ, "get": READ, "count": READ, "list": READ, "add": WRITE, "delete": WRITE}
ANY_NAMESPACE = "*"
DEFAULT_NAMESPACE_MARK = "-"
HASH_PREFIX = "sha256:"
RELOAD_INTERVAL_S = 1.0

_HEX64 = re.compile(r"[0-9A-Fa-f]{64}")
_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]+")


class AuthError(Exception):
    """Base of the refusals; `msg` is safe to send to the caller, `reason` is machine-readable."""

    def __init__(self, msg: str, reason: str) -> None:
        super().__init__(msg)
        self.msg = msg
        self.reason = reason


class Unauthorized(AuthError):
    """No token, or one the table does not know (HTTP 401)."""


class Forbidden(AuthError):
    """A known token asked for a right or a namespace it does not have (HTTP 403)."""


class TokensFileError(Exception):
    """TOKENS_FILE cannot be used; the message names the file and line, never a token."""

    def __init__(self, path: str | os.PathLike[str], line: int | None, problem: str) -> None:
        where = f"{os.fspath(path)}, line {line}" if line else os.fspath(path)
        super().__init__(f"{where}: {problem}")
        self.path = os.fspath(path)
        self.line = line


@dataclass(frozen=True)
class Grant:
    """What a token may do: its namespace (None = any, chosen per request) and its set of rights."""

    namespace: str | None
    rights: frozenset[str]

    def allows(self, right: str) -> bool:
        """Whether this grant includes `right` (read, write or admin)."""
        return right in self.rights

    @classmethod
    def admin(cls) -> Grant:
        """Every right in every namespace (the legacy TOKEN, and the service without any token)."""
        return cls(None, RIGHTS[ADMIN])


@dataclass(frozen=True)
class _Entry:
    digest: bytes  # SHA-256 of the token: plaintext and hashed entries are compared the same way
    grant: Grant


def _digest(token: str) -> bytes:
    # surrogatepass: a header value that cannot be UTF-8 still hashes (and simply matches nothing).
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def _token_digest(field: str, path: Path, number: int) -> bytes:
    if field.startswith(HASH_PREFIX):
        hexdigits = field[len(HASH_PREFIX) :]
        if not _HEX64.fullmatch(hexdigits):
            raise TokensFileError(
                path, number, "field 1 starts with 'sha256:' but is not followed by exactly 64 hexadecimal digits"
            )
        return bytes.fromhex(hexdigits)
    if not _PRINTABLE_ASCII.fullmatch(field):
        raise TokensFileError(
            path, number, "field 1 (the token) must be printable ASCII without spaces, or sha256:<64 hex digits>"
        )
    return _digest(field)


def _namespace(field: str, path: Path, number: int) -> str | None:
    if field == ANY_NAMESPACE:
        return None
    if field == DEFAULT_NAMESPACE_MARK:
        return DEFAULT_NAMESPACE
    try:
        return check_namespace(field)
    except NamespaceError:
        raise TokensFileError(
            path,
            number,
            "field 2 (the namespace) must be '*', '-' (the default namespace) "
            "or 1-64 letters, digits, '_', '.', '-' not starting with "
            "'.' or '-'",
        ) from None


def _parse_line(fields: list[str], path: Path, number: int) -> _Entry:
    if len(fields) != 3:
        raise TokensFileError(path, number, f"expected 3 fields (token, namespace, rights), found {len(fields)}")
    digest = _token_digest(fields[0], path, number)
    namespace = _namespace(fields[1], path, number)
    rights = RIGHTS.get(fields[2])
    if rights is None:
        raise TokensFileError(path, number, "field 3 (the rights) must be read, write or admin")
    if ADMIN in rights and namespace is not None:
        raise TokensFileError(path, number, "an admin token acts in every namespace: write '*' as field 2")
    return _Entry(digest, Grant(namespace, rights))


def _fields(line: str) -> list[str]:
    fields = line.split()
    for i, field in enumerate(fields):
        if field.startswith("#"):
            return fields[:i]
    return fields


def parse_tokens(data: bytes, path: str | os.PathLike[str]) -> tuple[_Entry, ...]:
    """The entries of a tokens file's bytes; raises TokensFileError at the first malformed line."""
    path = Path(path)
    entries: list[_Entry] = []
    first_line: dict[bytes, int] = {}
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            raise TokensFileError(path, number, "is not UTF-8 text") from None
        fields = _fields(line)
        if not fields:
            continue
        entry = _parse_line(fields, path, number)
        if entry.digest in first_line:
            # Two grants for one token would make its rights depend on the line order.
            raise TokensFileError(path, number, f"repeats the token of line {first_line[entry.digest]}")
        first_line[entry.digest] = number
        entries.append(entry)
    return tuple(entries)


_Signature = tuple[int, int, int, int, int]


def _signature(stat: os.stat_result) -> _Signature:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def _read(path: Path) -> tuple[tuple[_Entry, ...], _Signature]:
    """Parse the file and return the signature of exactly the bytes parsed (fstat of the open file)."""
    try:
        with open(path, "rb") as handle:
            signature = _signature(os.fstat(handle.fileno()))
            data = handle.read()
    except OSError as exc:
        raise TokensFileError(path, None, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    return parse_tokens(data, path), signature


class TokenTable:
    """The known tokens and their grants; built from TOKENS_FILE (re-read when it changes) or one admin token."""

    def __init__(
        self,
        entries: tuple[_Entry, ...],
        path: Path | None = None,
        signature: _Signature | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries = entries
        self._path = path
        self._signature = signature
        self._clock = clock
        self._checked_at = clock()
        self._reload_lock = threading.Lock()
        self._last_error: str | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], clock: Callable[[], float] = time.monotonic) -> TokenTable:
        """Load TOKENS_FILE; raises TokensFileError (file and line number, never a token) if it is unusable."""
        entries, signature = _read(Path(path))
        _log_loaded(Path(path), entries, "loaded")
        return cls(entries, Path(path), signature, clock)

    @classmethod
    def single_admin(cls, token: str) -> TokenTable:
        """A table of one admin token: the legacy TOKEN setting."""
        if not token:
            raise ValueError("the admin token must not be empty")
        return cls((_Entry(_digest(token), Grant.admin()),))

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, presented: str) -> Grant | None:
        """The grant of the presented token, or None if it is unknown.

        Every entry is compared (hmac.compare_digest of SHA-256 digests), whichever matches, so the
        time taken says nothing about which entry or how much of a token matched.
        """
        self._maybe_reload()
        digest = _digest(presented)
        found: Grant | None = None
        for entry in self._entries:  # a local reference: a concurrent reload swaps the whole tuple
            if hmac.compare_digest(entry.digest, digest) and found is None:
                found = entry.grant
        return found if presented else None

    def reload_if_changed(self) -> bool:
        """Re-read the file now if it changed; True if a new table is in force. Failures keep the old one."""
        if self._path is None:
            return False
        with self._reload_lock:
            self._checked_at = self._clock()
            return self._reload_locked(self._path)

    def _maybe_reload(self) -> None:
        if self._path is None or self._clock() - self._checked_at < RELOAD_INTERVAL_S:
            return
        # One thread checks; the others keep serving with the current table rather than queueing behind it.
        if not self._reload_lock.acquire(blocking=False):
            return
        try:
            self._checked_at = self._clock()
            self._reload_locked(self._path)
        finally:
            self._reload_lock.release()

    def _reload_locked(self, path: Path) -> bool:
        try:
            if _signature(os.stat(path)) == self._signature:
                return False
            entries, signature = _read(path)
        except (OSError, TokensFileError) as exc:
            problem = exc if isinstance(exc, TokensFileError) else TokensFileError(path, None, "cannot be read")
            if str(problem) != self._last_error:  # log each new problem once, not every second
                log.error("%s; keeping the previous %d tokens", problem, len(self._entries))
                self._last_error = str(problem)
            return False
        self._entries, self._signature, self._last_error = entries, signature, None
        _log_loaded(path, entries, "re-read")
        return True


def _log_loaded(path: Path, entries: tuple[_Entry, ...], verb: str) -> None:
    if entries:
        log.info("%s %s: %d tokens", verb, path, len(entries))
    else:
        log.warning("%s %s: it holds no tokens, so every request that needs one is refused", verb, path)


def authenticate(table: TokenTable | None, presented: str | None) -> Grant:
    """The grant for a request's token; no table (no token configured) keeps the open behaviour: admin.

    Raises Unauthorized when a token is needed and missing or unknown.
    """
    if table is None:
        return Grant.admin()
    if not presented:
        raise Unauthorized(
            "missing token: send it in the 'token' header or as 'Authorization: Bearer <token>'", reason="token_missing"
        )
    grant = table.lookup(presented)
    if grant is None:
        raise Unauthorized("invalid token", reason="token_invalid")
    return grant


def namespace_for(grant: Grant, requested: object) -> str:
    """The namespace a grant acts in, given the request's `namespace` field (None: absent).

    A token bound to a namespace always gets exactly that namespace: asking for any other raises
    Forbidden. A `*` token gets the requested namespace (default ""), checked against NAMESPACE_RE
    (NamespaceError, a ValueError: answer 400).
    """
    if grant.namespace is None:
        return DEFAULT_NAMESPACE if requested is None else check_namespace(requested)
    if requested is None or (isinstance(requested, str) and requested == grant.namespace):
        return grant.namespace
    raise Forbidden(
        "this token is bound to one namespace and cannot act in another: leave out 'namespace' "
        "or use a token of that namespace",
        reason="namespace_forbidden",
    )
