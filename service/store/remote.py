"""The catalog of a running imgsim service, read over its HTTP API: the old collection of a reindex on Milvus Lite.

Milvus Lite opens its file in one process at a time, so `main.py reindex` cannot open the file a running service
holds. With `--service URL` it reads the old catalog through that service instead: POST /api/image/sim/export
answers the rows of every namespace in id windows (admin tokens only), while the service keeps serving and
writing. RemoteCollection has OldCollection's interface (service.store.records), so a reindex reads either the
same way; like OldCollection it never writes anything.

The admin token travels in the Authorization header and is never logged or put into a message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from conf.errors import NotReady, StartupError
from service.store.filters import JS_MAX_SAFE_INTEGER, Layout
from service.store.records import CollectionInfo, normalised

log = logging.getLogger(__name__)

T = TypeVar("T")

EXPORT_PATH = "/api/image/sim/export"
EXPORT_MAX = 5000  # rows one answer holds at most (the endpoint's `limit` bound, service.api.contract.EXPORT_MAX)
TIMEOUT = (5.0, 120.0)  # connect, read (a window of 1000 rows is read Strong while the service writes)
ATTEMPTS = 6  # over about half a minute: a service restarting, or answering 503 while Milvus is away


class _Transient(Exception):
    """A 503, or no answer: worth another try."""


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, (_Transient, requests.ConnectionError, requests.Timeout))


class RemoteCollection:
    """The collection a running imgsim service serves, read through its export endpoint (never written)."""

    def __init__(
        self, url: str, name: str, token: str | None, attempts: int = ATTEMPTS, page: int = EXPORT_MAX
    ) -> None:
        """The service at `url` (http://HOST:PORT), which must serve collection `name` (or an alias of that name);
        `token`: an admin token of that service (None: an open service); `page`: rows asked per answer (at most
        EXPORT_MAX). Nothing is sent before `open`."""
        self.base = url.rstrip("/")
        self.name = name
        self.target = f"the imgsim service at {self.base}"
        self.layout = Layout(tenancy=False, partition_key=False, regions=False)
        self._attempts = attempts
        self._page = max(1, min(page, EXPORT_MAX))
        self._http = requests.Session()
        if token:
            self._http.headers["Authorization"] = f"Bearer {token}"

    def open(self) -> CollectionInfo:
        """Ask the service what it serves. Raises StartupError when it serves another collection than `name`, when
        the token is not an admin token of it, or when it has no export endpoint; NotReady when it does not answer.
        """
        data = self._export(0, JS_MAX_SAFE_INTEGER, 1)
        coll = data["collection"]
        served, alias = str(coll["name"]), coll.get("alias")
        if self.name not in (served, alias):
            also = f" (through alias {alias!r})" if alias else ""
            raise StartupError(
                f"{self.target} serves collection {served!r}{also}, not {self.name!r}: name the collection it serves "
                f"in --from ({served}), or pass the URL of the service that serves {self.name!r} in --service"
            )
        self.name = served  # --from may name its alias: read the collection behind it
        self.layout = Layout(tenancy=bool(coll["tenancy"]), partition_key=False, regions=bool(coll["regions"]))
        space = coll.get("space")
        summary = str(coll.get("space_summary") or "")
        return CollectionInfo(served, 0, self.layout, str(space) if space else None, summary, int(data["total"]), {})

    def count(self) -> int:
        """How many rows the collection holds, in all namespaces."""
        return int(self._export(0, JS_MAX_SAFE_INTEGER, 1)["total"])

    def rows_window(self, low: int, high: int, cap: int) -> list[dict[str, Any]]:
        """The rows with low < id <= high (at most `cap`), as OldCollection.rows_window shows them.

        One answer holds at most `page` rows, not necessarily the smallest ids, so a window answered full is split
        in halves and read again; once `cap` rows are found the rest is left (service.store.records.id_windows
        halves a window answered with `cap` rows and reads it again).
        """
        limit = max(1, min(int(cap), self._page))
        found: list[dict[str, Any]] = []
        pending = [(int(low), int(high))]
        while pending and len(found) < cap:
            lo, hi = pending.pop()
            rows = self._export(lo, hi, limit)["rows"]
            if len(rows) >= limit and hi > lo + 1 and limit < cap:
                mid = lo + (hi - lo) // 2
                pending += [(mid, hi), (lo, mid)]  # the lower half first: pop() takes the last
                continue
            found.extend(normalised(r) for r in rows)
        return found

    def close(self) -> None:
        """Drop the HTTP connections (the service and its collection are left as they were)."""
        self._http.close()

    def _export(self, after: int, upto: int, limit: int) -> dict[str, Any]:
        body = {"after": after, "upto": upto, "limit": limit}
        return self._retried(lambda: self._post(body))

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        resp = self._http.post(self.base + EXPORT_PATH, json=body, timeout=TIMEOUT)
        if resp.status_code == 503:
            raise _Transient(_msg(resp))
        if resp.status_code in (401, 403):
            raise StartupError(
                f"{self.target} refused the token ({resp.status_code}: {_msg(resp)}): the export needs an ADMIN "
                "token of that service (it reads every namespace). Set REINDEX_TOKEN to one (else TOKEN is sent)."
            )
        if resp.status_code in (404, 405):
            raise StartupError(
                f"{self.target} has no export endpoint ({resp.status_code}): is it an imgsim service, and one of this "
                "version? Upgrade it first (a restart on the same settings), or stop it and reindex without --service"
            )
        if resp.status_code != 200:
            raise StartupError(f"{self.target} answered {resp.status_code} to the export: {_msg(resp)}")
        return dict(resp.json()["data"])

    def _retried(self, fn: Callable[[], T]) -> T:
        """One call, tried again while the service does not answer or answers 503; NotReady if that lasts."""
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(self._attempts),
                wait=wait_exponential(0.5, max=8.0),
                retry=retry_if_exception(_transient),
                reraise=True,
            ):
                with attempt:
                    return fn()
        except (_Transient, requests.RequestException) as exc:
            raise NotReady(f"{self.target} is not answering ({_short(exc)}); run the reindex again later") from exc
        raise AssertionError("unreachable")  # pragma: no cover - Retrying either returns or raises


def _msg(resp: requests.Response) -> str:
    """The service's `msg` (its envelope), else the start of the body."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    return str(body.get("msg") if isinstance(body, dict) else body)[:300]


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
