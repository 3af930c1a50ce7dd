"""Duplicate groups of a whole namespace: the blockwise pair search, the scan jobs, and the pages of groups.

Two records are duplicates when their images have the same MD5 or their vectors score at least `min_score`
(cosine). A group is a connected set of such pairs, so no record is in two groups. A scan reads the
namespace's vectors in id windows (VectorStore.vector_chunks) into one matrix, and compares each block of rows
with the rows before it as soon as they are read (PairSearch): never an all-pairs search through Milvus,
never a dense n x n matrix.

In the service scans are jobs (Scans, in Deps): one worker thread runs them one at a time, so memory stays
bounded by one scan, and a request thread only queues a job or reads its state. Results live in memory
until the process restarts; `python main.py duplicates` writes the same groups to a file.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from threadpoolctl import threadpool_limits

from conf.errors import ApiError, BadInput, Conflict, NotFound, NotReady
from service.store.filters import FilterError, compile_filter
from service.store.records import Scope, VectorChunk, VectorStore

if TYPE_CHECKING:  # only for type hints: Deps holds the Scans defined here
    from service.usecases.deps import Deps

log = logging.getLogger(__name__)

# Members listed per group: one photo under thousands of keys would make a page nobody can review. A bigger
# group says its real `size` and `capped`.
GROUP_CAP = 100
# Rows of one block product, and its columns: one product is at most ROW_BLOCK x COLUMN_BLOCK float32 (32 MB).
ROW_BLOCK = 1024
COLUMN_BLOCK = 8192
# Pair edges kept before they are folded into their components: bounds memory when one photo has thousands
# of copies (its pairs grow with the square of the copies; its components only with the copies).
EDGE_FOLD = 1 << 20
# Groups per page of POST /duplicates.
PAGE_DEFAULT, PAGE_MAX = 20, 100
# Finished and failed jobs remembered for GET .../scan/<job> (the latest done one of each namespace is always kept).
JOBS_KEPT = 256
JOB_ID = re.compile(r"^[0-9a-f]{16}$")
# Ids of the grouped records read per store call when a scan's groups are described.
DESCRIBE_BATCH = 1024

Progress = Callable[[int, int], None]  # (records_done, records_total)


# --- the algorithm ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Member:
    """A record of a group and its best score to another member (1.0 for the same image bytes)."""

    id: int
    score: float


@dataclass(frozen=True)
class FoundGroup:
    """A group: its real size, its best pair score, and its members (at most GROUP_CAP) by score then id."""

    size: int
    best: float
    members: tuple[Member, ...]

    @property
    def capped(self) -> bool:
        """Whether the group holds more records than it lists."""
        return self.size > len(self.members)


class _Edges:
    """The pairs found so far, folded into (record, representative) edges whenever they grow past EDGE_FOLD."""

    def __init__(self) -> None:
        self._rows: list[np.ndarray] = []
        self._cols: list[np.ndarray] = []
        self._kept = 0

    def add(self, rows: np.ndarray, cols: np.ndarray, n: int) -> None:
        """Add pairs among the first `n` records."""
        if rows.size == 0:
            return
        self._rows.append(rows.astype(np.int64, copy=False))
        self._cols.append(cols.astype(np.int64, copy=False))
        self._kept += rows.size
        if self._kept > EDGE_FOLD:
            self._fold(n)

    def labels(self, n: int) -> np.ndarray:
        """The component label of each of the first `n` records (one without pairs is a component of its own)."""
        rows = np.concatenate(self._rows) if self._rows else np.empty(0, np.int64)
        cols = np.concatenate(self._cols) if self._cols else np.empty(0, np.int64)
        graph = coo_matrix((np.ones(rows.size, np.int8), (rows, cols)), shape=(n, n))
        _count, labels = connected_components(graph, directed=False)
        return labels

    def _fold(self, n: int) -> None:
        labels = self.labels(n)
        # One edge from each paired record to its component's first record keeps the components, nothing more.
        sizes = np.bincount(labels, minlength=labels.max() + 1)
        first = np.full(sizes.size, n, np.int64)
        np.minimum.at(first, labels, np.arange(n))
        members = np.nonzero(sizes[labels] > 1)[0]
        self._rows, self._cols = [members], [first[labels[members]]]
        self._kept = members.size


class PairSearch:
    """Finds the duplicate pairs among records as they arrive: each block of new rows is compared with every row
    before it and with itself (the lower triangle), so a scan compares while it is still reading.

    Memory: the vector matrix (allocated once at the expected size, grown only if more records come), one block
    product of at most `block` x `columns` scores, and the edges found.
    """

    def __init__(
        self,
        min_score: float,
        capacity: int = 0,
        block: int = ROW_BLOCK,
        columns: int = COLUMN_BLOCK,
        on_rows: Callable[[int], None] | None = None,
    ) -> None:
        self.min_score = min_score
        self.block = block
        self.columns = max(block, columns)
        self.on_rows = on_rows
        self.capacity = capacity
        self.vectors: np.ndarray | None = None
        self.ids = np.empty(capacity, np.int64)
        self.md5s: list[str] = []
        self.best = np.full(capacity, -np.inf, np.float32)
        self.n = 0  # rows held
        self.compared = 0  # rows compared with every row before them
        self._edges = _Edges()

    def add(self, ids: np.ndarray, md5s: Sequence[str], vectors: np.ndarray) -> None:
        """Take more records, and compare the full blocks of rows that are now complete."""
        size = len(ids)
        if self.vectors is None and size >= self.capacity:  # all at once (find_groups): no copy of the matrix
            self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            self.capacity = size
            self.ids = np.asarray(ids, dtype=np.int64)
            self.md5s = list(md5s)
            self.best = np.full(size, -np.inf, np.float32)
            self.n = size
            self._compare(final=False)
            return
        if self.vectors is None:
            self.capacity = max(self.capacity, size)
            self.vectors = np.empty((self.capacity, vectors.shape[1]), np.float32)
            self.ids = np.empty(self.capacity, np.int64)
            self.best = np.full(self.capacity, -np.inf, np.float32)
        if self.n + size > self.capacity:  # records written since they were counted: grow (rare)
            self._grow(max(self.n + size, 2 * self.capacity))
        self.vectors[self.n : self.n + size] = vectors
        self.ids[self.n : self.n + size] = ids
        self.md5s.extend(md5s)
        self.n += size
        self._compare(final=False)

    def groups(self) -> list[FoundGroup]:
        """Compare the last rows, add the pairs of equal MD5s, and make the groups (see find_groups)."""
        self._compare(final=True)
        n = self.n
        best = self.best[:n]
        _md5_pairs(self.md5s, best, self._edges, n)
        return _groups(self.ids[:n], self._edges.labels(n), best)

    def _grow(self, capacity: int) -> None:
        assert self.vectors is not None
        vectors = np.empty((capacity, self.vectors.shape[1]), np.float32)
        vectors[: self.n] = self.vectors[: self.n]
        self.vectors = vectors
        self.ids = np.concatenate([self.ids[: self.n], np.empty(capacity - self.n, np.int64)])
        self.best = np.concatenate([self.best[: self.n], np.full(capacity - self.n, -np.inf, np.float32)])
        self.capacity = capacity

    def _compare(self, final: bool) -> None:
        vectors = self.vectors
        while vectors is not None and (self.n - self.compared >= self.block or (final and self.compared < self.n)):
            i = self.compared
            end = min(self.n, i + self.block)
            rows = vectors[i:end]
            for j in range(0, end, self.columns):
                scores = rows @ vectors[j : min(end, j + self.columns)].T
                r, c = np.nonzero(scores >= self.min_score)
                gi, gj = r + i, c + j
                lower = gj < gi  # each pair once, and never a record with itself
                gi, gj, s = gi[lower], gj[lower], scores[r[lower], c[lower]]
                np.maximum.at(self.best, gi, s)
                np.maximum.at(self.best, gj, s)
                self._edges.add(gi, gj, self.n)
            self.compared = end
            if self.on_rows is not None:
                self.on_rows(end)


def find_groups(
    ids: np.ndarray,
    md5s: Sequence[str],
    vectors: np.ndarray,
    min_score: float,
    block: int = ROW_BLOCK,
    on_rows: Callable[[int], None] | None = None,
    columns: int = COLUMN_BLOCK,
) -> list[FoundGroup]:
    """The duplicate groups among these records: largest first, then by best score, then by smallest id.

    `vectors` are unit rows (n, dim); a pair is a duplicate when its dot product is >= `min_score` or its MD5s
    are equal (score 1.0). Each block of `block` rows is compared with the rows before it, `columns` at a time.
    `on_rows(done)` is told after each block how many rows are compared with every row before them.
    """
    search = PairSearch(min_score, len(ids), block, columns, on_rows)
    if len(ids):
        search.add(np.asarray(ids, dtype=np.int64), md5s, vectors)
    return search.groups()


def _md5_pairs(md5s: Sequence[str], best: np.ndarray, edges: _Edges, n: int) -> None:
    """Link the records of the same image bytes (score 1.0): each to the first record of its MD5."""
    first: dict[str, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    for index, md5 in enumerate(md5s):
        seen = first.setdefault(md5, index)
        if seen != index:
            rows.append(seen)
            cols.append(index)
    if rows:
        r, c = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
        best[r] = 1.0
        best[c] = 1.0
        edges.add(r, c, n)


def _groups(ids: np.ndarray, labels: np.ndarray, best: np.ndarray) -> list[FoundGroup]:
    if labels.size == 0:
        return []
    sizes = np.bincount(labels)
    paired = np.nonzero(sizes[labels] > 1)[0]
    # Members by score desc, then id; the rounding keeps float noise from reordering equal scores.
    scores = np.round(best[paired].astype(np.float64), 6)
    order = np.lexsort((ids[paired], -scores, labels[paired]))
    by_label: dict[int, list[Member]] = {}
    for index in order:
        record = paired[index]
        by_label.setdefault(int(labels[record]), []).append(Member(int(ids[record]), float(scores[index])))
    # Largest first, then the best pair score, then the smallest id: a stable order for the same data.
    ranked = sorted(by_label.values(), key=lambda ms: (-len(ms), -ms[0].score, min(m.id for m in ms)))
    return [FoundGroup(len(ms), ms[0].score, tuple(ms[:GROUP_CAP])) for ms in ranked]


# --- one scan -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScanResult:
    """What a scan found: the groups, how many records it compared, and how long it took (reading included).

    `described` holds each group as answers show it (GroupView) when the scan was asked for details.
    """

    groups: list[FoundGroup]
    records_total: int
    seconds: float
    described: list[dict[str, Any]] = field(default_factory=list)

    @property
    def grouped_records(self) -> int:
        """How many records are in some group."""
        return sum(g.size for g in self.groups)


def scan_namespace(
    store: VectorStore,
    scope: Scope,
    min_score: float,
    filter_expr: str = "",
    on_progress: Progress | None = None,
    details: bool = True,
) -> ScanResult:
    """Find the duplicate groups of the namespace (its records matching the compiled filter `filter_expr`).

    A reader thread reads the vectors in id windows while this thread compares the rows already read: reading
    (Milvus and pymilvus, mostly Python) and the matrix products (numpy, outside the GIL) overlap. `on_progress(
    records_done, records_total)` is told as rows are compared; it may raise to stop the scan. With `details`,
    each group's records are read (get_ids) into `described`, as the CLI writes them and the benchmark checks them.
    """
    started = time.perf_counter()
    # The matrix lives only inside _compare_all: it is freed before the grouped records are read.
    groups, records = _compare_all(store, scope, min_score, filter_expr, on_progress)
    described = describe_groups(store, scope, groups) if details else []
    return ScanResult(groups, records, time.perf_counter() - started, described)


def _compare_all(
    store: VectorStore, scope: Scope, min_score: float, filter_expr: str, on_progress: Progress | None
) -> tuple[list[FoundGroup], int]:
    """The groups of the namespace's records, and how many records were compared."""
    total = store.count(scope, filter_expr=filter_expr)
    search = PairSearch(min_score, total)
    if on_progress is not None:
        report = on_progress  # bound here, for the closure below
        search.on_rows = lambda done: report(done, max(total, search.n))
        report(0, total)
    for chunk in read_ahead(store.vector_chunks(scope, filter_expr)):
        search.add(chunk.ids, chunk.md5s, chunk.vectors)
    return search.groups(), search.n


def read_ahead(chunks: Iterator[VectorChunk], ahead: int = 2) -> Iterator[VectorChunk]:
    """The chunks, read by a thread of their own up to `ahead` chunks in advance; its failure is raised here.

    When the consumer stops early (an exception, a cancelled scan), the reader stops after its current chunk.
    """
    handoff: queue.Queue[VectorChunk | BaseException | None] = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def put(item: VectorChunk | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
            put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            put(exc)

    reader = threading.Thread(target=read, name="duplicate-scan-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = handoff.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


def describe_groups(store: VectorStore, scope: Scope, groups: Sequence[FoundGroup]) -> list[dict[str, Any]]:
    """The groups as answers show them, their records read from the store now.

    A record deleted since the scan is left out (and the group's size counts it no more); a group left
    with fewer than two records is left out.
    """
    wanted = [m.id for g in groups for m in g.members]
    found: dict[int, dict[str, Any]] = {}
    for start in range(0, len(wanted), DESCRIBE_BATCH):
        found.update((r["id"], r) for r in store.get_ids(scope, wanted[start : start + DESCRIBE_BATCH]))
    described = []
    for group in groups:
        records = [{**found[m.id], "score": m.score} for m in group.members if m.id in found]
        if len(records) < 2:
            continue
        records.sort(key=lambda r: (-r["score"], r["key"], r["id"]))
        gone = len(group.members) - len(records)
        described.append({"size": group.size - gone, "capped": group.capped, "records": records})
    return described


def checked_scan_filter(store: VectorStore, namespace: str, filter_value: Any) -> tuple[Scope, str]:
    """The namespace's scope and the caller's filter as a Milvus expression, checked before anything is queued.

    400 bad_filter for a bad filter, 409 for a filter on a collection without attrs, 503 when Milvus is away.
    """
    try:
        expr = compile_filter(filter_value)
    except FilterError as exc:
        raise BadInput(f"field 'filter': {exc}", reason="bad_filter") from None
    return store.scope(namespace, filtered=bool(expr)), expr


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Limit numpy's BLAS to one thread meanwhile, so a scan's matrix products leave the other cores to searches."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


# --- jobs ---------------------------------------------------------------------------------------------------
class ScanState(StrEnum):
    """Where a scan job is."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class _Stopped(Exception):
    """Raised inside a scan when the service shuts down."""


@dataclass
class ScanJob:
    """One scan of one namespace: what was asked, where it is, and (when done) its groups."""

    job: str
    namespace: str
    min_score: float
    filter: Any
    filter_expr: str
    scope: Scope
    state: ScanState = ScanState.QUEUED
    records_done: int = 0
    records_total: int = 0
    result: list[FoundGroup] | None = None
    group_count: int | None = None
    grouped_records: int | None = None
    started: str | None = None
    finished: str | None = None
    seconds: float | None = None
    error: dict[str, str] | None = None

    @property
    def active(self) -> bool:
        """Queued or running."""
        return self.state in (ScanState.QUEUED, ScanState.RUNNING)


class Scans:
    """The scan jobs of this process: queued and run one at a time by one worker thread, kept in memory.

    The latest done scan of a namespace is its result until a newer one is done; a failed scan keeps it.
    """

    def __init__(self, pace: Callable[[ScanJob], None] | None = None) -> None:
        """`pace(job)` is called by the worker at each step of a running scan (its start, then each block of rows
        compared); it may raise ApiError to fail the scan. Nothing uses it in the service: tests hold a scan
        mid-way with it, to see what the service does while a scan runs, whatever the machine's speed."""
        self._pace = pace
        self._lock = threading.Lock()
        self._jobs: dict[str, ScanJob] = {}  # in the order started (dicts keep it): the oldest are forgotten first
        self._latest: dict[str, ScanJob] = {}  # namespace -> latest done job
        self._queue: queue.Queue[tuple[ScanJob, VectorStore] | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self, deps: Deps, namespace: str, min_score: float | None, filter: Any) -> ScanJob:
        """Queue a scan of the namespace; the default `min_score` is the duplicate score in force.

        The filter and namespace are checked now (4xx, 503), before anything is queued. 409 scan_running
        when a scan of the namespace is queued or running; its `data` names that job, to follow it.
        """
        scope, expr = checked_scan_filter(deps.store, namespace, filter)
        score = deps.duplicate_score if min_score is None else min_score
        with self._lock:
            if self._stop.is_set():
                raise NotReady("the service is shutting down; start the scan again once it is back")
            for other in self._jobs.values():
                if other.namespace == namespace and other.active:
                    raise Conflict(
                        f"a scan of this namespace is {other.state.value} already (job {other.job}); follow it "
                        f"with GET /api/image/sim/duplicates/scan/{other.job} and start another once it is done",
                        reason="scan_running",
                        data={"job": other.job, "state": other.state.value},
                    )
            job = ScanJob(secrets.token_hex(8), namespace, float(score), filter or None, expr, scope)
            self._jobs[job.job] = job
            self._forget_old()
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="duplicate-scans", daemon=True)
                self._worker.start()
        self._queue.put((job, deps.store))
        return job

    def job(self, namespace: str, job_id: str) -> ScanJob:
        """The namespace's job `job_id`; 404 scan_not_found for an unknown one and for another namespace's."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or job.namespace != namespace:
            raise NotFound(
                f"no scan job {job_id!r} in this namespace (jobs are kept in memory until the service restarts); "
                "start one with POST /api/image/sim/duplicates/scan",
                reason="scan_not_found",
            )
        return job

    def latest(self, namespace: str) -> ScanJob | None:
        """The latest done scan of the namespace, if any."""
        with self._lock:
            return self._latest.get(namespace)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker: a running scan stops at its next block and fails; queued ones fail."""
        self._stop.set()
        self._queue.put(None)
        worker = self._worker
        if worker is not None:
            worker.join(timeout)

    def _forget_old(self) -> None:
        """Keep at most JOBS_KEPT jobs: drop the oldest finished ones that are no namespace's latest result."""
        kept = {id(j) for j in self._latest.values()}
        for job_id in [j.job for j in self._jobs.values() if not j.active and id(j) not in kept]:
            if len(self._jobs) <= JOBS_KEPT:
                break
            del self._jobs[job_id]

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                break
            job, store = item
            if self._stop.is_set():
                self._finish(job, error=NotReady("the service shut down before the scan ran"))
                continue
            self._scan(job, store)
        while not self._queue.empty():  # fail what is still queued, so no job stays "queued" for ever
            rest = self._queue.get_nowait()
            if rest is not None:
                self._finish(rest[0], error=NotReady("the service shut down before the scan ran"))

    def _scan(self, job: ScanJob, store: VectorStore) -> None:
        def progress(done: int, total: int) -> None:
            if self._stop.is_set():
                raise _Stopped
            job.records_done, job.records_total = done, total
            if self._pace is not None:
                self._pace(job)

        job.state, job.started = ScanState.RUNNING, _now()
        started = time.perf_counter()
        try:
            with one_blas_thread():
                result = scan_namespace(store, job.scope, job.min_score, job.filter_expr, progress, details=False)
        except _Stopped:
            self._finish(job, error=NotReady("the service shut down during the scan; start it again"))
        except ApiError as exc:  # Milvus away (NotReady), the collection gone...
            self._finish(job, error=exc)
        except Exception as exc:  # a failed scan must not kill the worker; the job reports it, the log has the trace
            log.exception("duplicate scan %s of namespace %r failed", job.job, job.namespace)
            self._finish(job, error=ApiError(f"the scan failed unexpectedly ({type(exc).__name__}); see the log"))
        else:
            job.records_done = job.records_total = result.records_total
            job.result = result.groups
            job.group_count, job.grouped_records = len(result.groups), result.grouped_records
            job.seconds = time.perf_counter() - started
            self._finish(job)

    def _finish(self, job: ScanJob, error: ApiError | None = None) -> None:
        with self._lock:
            job.finished = _now()
            if error is not None:
                job.state, job.error = ScanState.FAILED, {"reason": error.reason, "msg": error.msg}
                return
            job.state = ScanState.DONE
            previous = self._latest.get(job.namespace)
            if previous is not None:
                previous.result = None  # replaced: its groups are no longer served, so free them
            self._latest[job.namespace] = job
        log.info(
            "duplicate scan %s of namespace %r: %d records, %d groups in %.1f s",
            job.job,
            job.namespace,
            job.records_total,
            job.group_count or 0,
            job.seconds or 0.0,
        )


# --- use cases ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupsPage:
    """A page of the latest done scan's groups, the cursor of the next page (None on the last), and that scan."""

    groups: list[dict[str, Any]]
    next: str | None
    scan: ScanJob


def start_scan(deps: Deps, namespace: str, min_score: float | None, filter_value: Any) -> ScanJob:
    """Queue a scan of the namespace's duplicate groups (see Scans.start)."""
    return deps.scans.start(deps, namespace, min_score, filter_value)


def scan_job(deps: Deps, namespace: str, job_id: str) -> ScanJob:
    """A scan job of the namespace; 400 bad_job for text that cannot be a job id, 404 for an unknown one."""
    if not JOB_ID.match(job_id):
        raise BadInput(
            f"{job_id[:40]!r} is not a scan job id: those are the 16 hexadecimal digits of the `job` that "
            "POST /api/image/sim/duplicates/scan answered",
            reason="bad_job",
        )
    return deps.scans.job(namespace, job_id)


def groups_page(deps: Deps, namespace: str, cursor: str | None, limit: int) -> GroupsPage:
    """The groups of the namespace's latest done scan from `cursor` on (None: the first page), `limit` at most.

    404 no_scan when no scan of the namespace is done; 409 scan_replaced when the cursor is of an older scan.
    """
    latest = deps.scans.latest(namespace)
    groups = None if latest is None else latest.result
    if latest is None or groups is None:
        raise NotFound(
            "this namespace has no finished duplicate scan (results are kept in memory until the service "
            "restarts); start one with POST /api/image/sim/duplicates/scan",
            reason="no_scan",
        )
    offset = 0
    if cursor is not None:
        job_id, offset = parse_cursor(cursor)
        if job_id != latest.job:
            raise Conflict(
                f"the cursor belongs to an older scan; scan {latest.job} has replaced it: start again from the "
                "first page (no cursor)",
                reason="scan_replaced",
            )
    chosen = groups[offset : offset + limit]
    end = offset + len(chosen)
    described = describe_groups(deps.store, latest.scope, chosen)
    return GroupsPage(described, f"{latest.job}.{end}" if end < len(groups) else None, latest)


def parse_cursor(cursor: str) -> tuple[str, int]:
    """The (job id, group offset) of a page cursor; 400 bad_cursor for anything else."""
    job_id, _, offset = cursor.partition(".")
    if not JOB_ID.match(job_id) or not offset.isascii() or not offset.isdigit() or len(offset) > 9:
        raise BadInput(
            f"field 'cursor' {cursor[:60]!r} is not a page cursor: send the `next` of the previous page "
            "unchanged, or no cursor for the first page",
            reason="bad_cursor",
        )
    return job_id, int(offset)
