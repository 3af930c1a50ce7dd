"""Import products from a CSV file (`python main.py import products.csv`): an image per row, with key and attributes.

Each row becomes the item an add/batch request would carry and is read by the HTTP contract's own item model
(service.api.contract.item_request) under this deployment's Limits, so a bad row fails with exactly the code,
reason and message the API would answer for that item. The good rows are then stored through the same use cases
as add/batch (and, with --sync, set/key), a page of rows at a time. A bad row never stops the import: it is listed
in a report CSV next to the input, by the line of the file where the row starts.

Reruns store nothing twice: a record's id derives from (namespace, key, MD5), so a row stored before is
recognised and only its attrs and imgPath are refreshed.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from conf.errors import ApiError, BadInput, Forbidden, NotReady
from conf.settings import Settings
from model.embedder import Embedder
from service.api.contract import Limits, item_request, key_value
from service.api.errors import status_of
from service.inputs import Source
from service.inputs.path import read_allowed
from service.store.filters import JS_MAX_SAFE_INTEGER, NamespaceError, check_namespace
from service.store.records import VectorStore
from service.usecases.add import Added, AddRequest, OnDuplicate
from service.usecases.batch import Outcome, add_batch
from service.usecases.deps import Deps, build_deps
from service.usecases.sync import set_key

# Rows handed to the use cases at once: enough for full model batches, few enough that a page's decoded images
# stay small (add/batch's own default cap is 100 items a request).
PAGE_ROWS = 64
# Keys synced at once: each set/key reads its few images; running several lets the model queue batch them.
SYNC_WORKERS = 4
IMAGE_COLUMNS = ("path", "url")
# The columns with a meaning of their own; any other column is an attribute (unless there is an `attrs` column).
KNOWN_COLUMNS = ("key", "path", "url", "imgPath", "namespace", "attrs")
EXPECTED = (
    "expected a header row naming the columns: 'path' (an image file; relative to the CSV's folder) and/or 'url', "
    "optionally 'key', 'imgPath', 'namespace', and either 'attrs' (a JSON object) or one column per attribute "
    "(such as category, price, tags)"
)
TAGS_COLUMN = "tags"
# A number as a spreadsheet writes one. Text with a leading zero ("007", zip and product codes) stays text: as a
# number it would lose its zeros.
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_LEADING_ZERO = re.compile(r"[+-]?0[0-9]")
_ATTR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


class CsvFileError(Exception):
    """The file cannot be imported at all: it cannot be read, is not UTF-8 CSV, or has no usable header."""


@dataclass(frozen=True)
class Row:
    """One data row of the file: where it starts, its key as written, its namespace, and its add (or why not)."""

    line: int
    key: str
    namespace: str
    request: AddRequest | ApiError
    product: str | None = None  # the key as the API reads it; None when the row has none or a key the API refuses


@dataclass(frozen=True)
class RowFailure:
    """A row that was not stored: its line in the file, its key as written, and the API's code, reason and message."""

    line: int
    key: str
    code: int
    reason: str
    message: str


@dataclass
class CsvSummary:
    """What a CSV import did."""

    rows: int = 0
    imported: int = 0
    already: int = 0
    failed: list[RowFailure] = field(default_factory=list)
    sync: bool = False
    deleted: int = 0
    keys_synced: int = 0
    keys_not_synced: list[str] = field(default_factory=list)  # a row of these failed: nothing of them was deleted
    report: Path | None = None
    seconds: float = 0.0

    def lines(self) -> list[str]:
        """A human summary, one line per fact and per failure reason (like the folder import's)."""
        out = [
            f"rows: {self.rows}",
            f"imported: {self.imported}",
            f"already stored: {self.already}",
            f"failed: {len(self.failed)}"
            + (f" (each listed with its line in {self.report})" if self.report is not None else ""),
        ]
        if self.sync:
            out.append(f"deleted (no longer listed): {self.deleted} from {self.keys_synced} keys synced")
            if self.keys_not_synced:
                shown = ", ".join(repr(k) for k in self.keys_not_synced[:10])
                more = f" and {len(self.keys_not_synced) - 10} more" if len(self.keys_not_synced) > 10 else ""
                out.append(
                    f"not synced (a row of the key failed, so none of its images was deleted): "
                    f"{len(self.keys_not_synced)} keys: {shown}{more}"
                )
        out.append(f"took: {self.seconds:.2f} s")
        example = {f.reason: f"line {f.line}: {f.message}" for f in reversed(self.failed)}  # the first of each
        for reason, n in Counter(f.reason for f in self.failed).most_common():
            out.append(f"  {n} x {reason} (e.g. {example[reason]})")
        return out


def report_path(csv_path: Path) -> Path:
    """Where the failed rows of `csv_path` are listed: products.csv -> products.errors.csv, beside it."""
    return csv_path.with_name(f"{csv_path.stem}.errors.csv")


# --- reading the file ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Header:
    """The columns of the file: the known ones by name, the attribute columns, and where each sits."""

    index: dict[str, int]  # column name (KNOWN_COLUMNS spelling) -> position
    attributes: list[tuple[str, int]]  # attribute columns: (name, position)
    width: int


def _header(cells: list[str]) -> _Header:
    """Read the header row; CsvFileError says what is wrong with it and which columns are expected."""
    names = [c.strip() for c in cells]
    if not any(names):
        raise CsvFileError(f"the first line is empty; {EXPECTED}")
    if len(names) == 1 and (";" in names[0] or "\t" in names[0]):  # a European Excel's or a TSV export
        raise CsvFileError(
            f"the header {names[0]!r} is one column: separate the columns with commas "
            "(Excel: save as 'CSV UTF-8 (comma delimited)')"
        )
    canonical = {k.lower(): k for k in KNOWN_COLUMNS}  # spreadsheets capitalise: "Key", "URL", "imgpath"
    index: dict[str, int] = {}
    attributes: list[tuple[str, int]] = []
    seen: set[str] = set()
    for pos, name in enumerate(names):
        if not name:
            raise CsvFileError(f"column {pos + 1} of the header has no name; {EXPECTED}")
        known = canonical.get(name.lower())
        if (known or name) in seen:
            raise CsvFileError(f"the header names the column {name!r} twice")
        seen.add(known or name)
        if known is not None:
            index[known] = pos
        elif not _ATTR_NAME.fullmatch(name):
            raise CsvFileError(
                f"the header's column {name!r} is not a usable attribute name: use 1-64 letters, digits and '_', "
                f"not starting with a digit (e.g. size_eu); {EXPECTED}"
            )
        else:
            attributes.append((name, pos))
    if not any(c in index for c in IMAGE_COLUMNS):
        raise CsvFileError(f"the header {', '.join(names)!s} has neither a 'path' nor a 'url' column; {EXPECTED}")
    if "attrs" in index and attributes:
        raise CsvFileError(
            f"the header has an 'attrs' column and the columns {', '.join(n for n, _ in attributes)}: give the "
            "attributes either as a JSON object in 'attrs' or one column each, not both"
        )
    return _Header(index, attributes, len(names))


def _number(text: str) -> int | float | None:
    """The number a cell holds (int for integral text), or None when it is text (also NaN, inf, "007", 1e400)."""
    if not _NUMBER.fullmatch(text) or _LEADING_ZERO.match(text):
        return None
    if _INTEGER.fullmatch(text):
        value = int(text)
        return value if abs(value) <= JS_MAX_SAFE_INTEGER else None  # a longer code stays exact, as text
    number = float(text)
    return number if math.isfinite(number) else None


def _attributes(cells: list[str], header: _Header) -> dict[str, Any]:
    """The row's attribute columns as attrs: numbers as numbers, `tags` split on '|', empty cells left out."""
    attrs: dict[str, Any] = {}
    for name, pos in header.attributes:
        text = cells[pos].strip() if pos < len(cells) else ""
        if not text:
            continue
        if name.lower() == TAGS_COLUMN:
            attrs[name] = [t.strip() for t in text.split("|") if t.strip()]
            continue
        number = _number(text)
        attrs[name] = text if number is None else number
    return attrs


def _cell(cells: list[str], header: _Header, name: str) -> str:
    pos = header.index.get(name)
    return cells[pos].strip() if pos is not None and pos < len(cells) else ""


@dataclass(frozen=True)
class CsvPath:
    """A `path` cell relative to the CSV's folder: read like the path input, with that folder as the only root.

    A relative path that leads out of the folder (`..`, a symlink) is refused like a path outside PATH_ROOTS;
    no other folder becomes readable for it. The recorded filepath is the absolute path.
    """

    raw: str
    folder: Path  # resolved

    def load(self, settings: Settings) -> Source:
        """Read the file below the CSV's folder within MAX_IMAGE_BYTES."""
        full = str(self.folder / self.raw)
        try:
            data, _real = read_allowed(full, [self.folder], settings.max_image_bytes)
        except Forbidden:
            raise Forbidden(
                f"path {self.raw!r} leads outside the CSV file's folder ({self.folder}); a relative path must stay "
                "below the folder of the CSV file: move the image there or give its absolute path below PATH_ROOTS"
            ) from None
        return Source(data, full)


def _item(cells: list[str], header: _Header) -> dict[str, Any]:
    """The add/batch item of a row (empty cells left out, as an absent field)."""
    item: dict[str, Any] = {}
    for name in ("key", "path", "url", "imgPath", "attrs"):
        if text := _cell(cells, header, name):
            item[name] = text
    if header.attributes and (attrs := _attributes(cells, header)):
        item["attrs"] = attrs
    return item


def _request(
    cells: list[str], header: _Header, folder: Path, limits: Limits, sync: bool
) -> tuple[str | None, AddRequest | ApiError]:
    """The row's key as the API reads it (None: none, or refused) and its AddRequest, or the ApiError the API would
    answer for the same item."""
    item = _item(cells, header)
    key: str | None = None
    if "key" in item:
        # A refused key: item_request below refuses the row with the API's message, after the checks the API makes
        # first; such a row names no product to sync.
        with contextlib.suppress(ApiError):
            key = key_value(item["key"], limits.max_key_length)
    try:
        extra = [c for c in cells[header.width :] if c.strip()]
        if extra:  # a stray comma or an unquoted comma inside a value shifts every later column
            raise BadInput(
                f"the row has {header.width + len(extra)} cells but the header names {header.width} columns; "
                'quote values that contain commas ("1,5")'
            )
        sources = [c for c in IMAGE_COLUMNS if c in item]
        if len(sources) != 1:
            raise BadInput(
                "a row names its image with exactly one of the columns 'path' or 'url' "
                f"(this one has {'both' if sources else 'neither'})"
            )
        # With --sync a keyed row is an item of its key's set/key, checked as that request checks its items.
        request = item_request(item, limits, OnDuplicate.ALLOW, key=key if sync else None)
        if "path" in item and not Path(item["path"]).is_absolute():
            request = replace(request, image=CsvPath(item["path"], folder))
        return key, request
    except ApiError as exc:
        return key, exc


def read_rows(csv_path: Path, settings: Settings, namespace: str, sync: bool = False) -> list[Row]:
    """Every data row of the file, each checked like an add/batch item; CsvFileError when the file is unusable.

    UTF-8 with or without a BOM (Excel's "CSV UTF-8" writes one). Blank lines are skipped. `namespace` is the
    rows' namespace where their `namespace` cell is empty.
    """
    try:
        text = csv_path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise CsvFileError(f"{csv_path} cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise CsvFileError(
            f"{csv_path} is not UTF-8 text (line {line}); save it as UTF-8 (Excel: 'CSV UTF-8 (comma delimited)')"
        ) from None
    folder = csv_path.resolve().parent
    limits = Limits.of(settings)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = _header(next(reader, []))
        rows: list[Row] = []
        start = reader.line_num + 1  # the line the next row starts on (a quoted value may span several lines)
        for cells in reader:
            line, start = start, reader.line_num + 1
            if not any(c.strip() for c in cells):
                continue
            product, request = _request(cells, header, folder, limits, sync)
            row_namespace = _cell(cells, header, "namespace") or namespace
            try:
                check_namespace(row_namespace)
            except NamespaceError as exc:  # the message of a request naming that namespace
                request = BadInput(f"field 'namespace': {exc}", reason="bad_namespace")
            rows.append(Row(line, _cell(cells, header, "key"), row_namespace, request, product))
    except csv.Error as exc:
        raise CsvFileError(f"{csv_path} is not a readable CSV file (line {reader.line_num}: {exc})") from None
    return rows


# --- storing ------------------------------------------------------------------------------------------------
def _pages(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class CsvImport:
    """Stores the rows of a CSV file through the add/batch (and set/key) use cases, and reports the failed rows."""

    def __init__(self, deps: Deps, progress: bool = True, page_rows: int = PAGE_ROWS) -> None:
        """`deps`: the use cases' dependencies (build_deps); the caller closes them."""
        self._deps = deps
        self._progress = progress
        self._page_rows = page_rows

    def run(self, csv_path: Path, rows: list[Row], sync: bool = False) -> CsvSummary:
        """Store every good row; with `sync` each keyed product holds exactly its rows' images afterwards.

        Writes the report of failed rows beside the file (and removes a stale one when no row failed).
        """
        started = time.perf_counter()
        summary = CsvSummary(rows=len(rows), sync=sync)
        with tqdm(total=len(rows), unit="row", disable=not self._progress, desc=f"import {csv_path.name}") as bar:
            if sync:
                self._sync(rows, summary, bar.update)
            else:
                self._add(rows, summary, bar.update)
        summary.failed.sort(key=lambda f: f.line)
        summary.report = _write_report(report_path(csv_path), summary.failed)
        summary.seconds = time.perf_counter() - started
        return summary

    def _add(self, rows: Sequence[Row], summary: CsvSummary, advance: Callable[[int], object]) -> None:
        """add/batch, a page at a time, one call per namespace of the page."""
        for page in _pages(rows, self._page_rows):
            for namespace in dict.fromkeys(r.namespace for r in page):
                of_ns = [r for r in page if r.namespace == namespace]
                _count(summary, of_ns, self._add_batch(namespace, of_ns))
            advance(len(page))

    def _add_batch(self, namespace: str, rows: Sequence[Row]) -> list[Outcome]:
        requests = [r.request for r in rows]
        refused: list[Outcome] = [r for r in requests if isinstance(r, ApiError)]
        if len(refused) == len(requests):
            return refused  # nothing to store
        try:
            return add_batch(self._deps, namespace, requests)
        except ApiError as exc:  # the namespace cannot take these items at all (a collection without attrs)
            if isinstance(exc, NotReady):  # Milvus away: not the rows' fault; the rerun picks up from here
                raise
            return [exc] * len(rows)

    def _sync(self, rows: Sequence[Row], summary: CsvSummary, advance: Callable[[int], object]) -> None:
        """set/key for each keyed product (several at once); rows with an empty key are added (their key is their
        MD5, which holds that one image whatever is synced)."""
        products: dict[tuple[str, str], list[Row]] = {}
        unkeyed: list[Row] = []
        for r in rows:
            # A row whose key the API refuses names no product: it fails as a row, and syncs nothing.
            if r.product is not None and not (isinstance(r.request, ApiError) and r.request.reason == "bad_namespace"):
                products.setdefault((r.namespace, r.product), []).append(r)
            else:
                unkeyed.append(r)
        self._add(unkeyed, summary, advance)
        with ThreadPoolExecutor(max_workers=SYNC_WORKERS, thread_name_prefix="csv-sync") as pool:
            # A few keys per worker at a time: if Milvus goes away, the error stops the import after them.
            for page in _pages(list(products.items()), SYNC_WORKERS * 4):
                for ((_namespace, key), of_key), (outcomes, deleted) in zip(
                    page, pool.map(self._set_key, page), strict=True
                ):
                    _count(summary, of_key, outcomes)
                    if all(isinstance(o, Added) for o in outcomes):
                        summary.keys_synced += 1
                        summary.deleted += deleted
                    else:
                        summary.keys_not_synced.append(key)
                    advance(len(of_key))

    def _set_key(self, product: tuple[tuple[str, str], list[Row]]) -> tuple[list[Outcome], int]:
        (namespace, key), of_key = product
        try:
            synced = set_key(self._deps, namespace, key, [r.request for r in of_key])
        except ApiError as exc:
            if isinstance(exc, NotReady):  # Milvus away: not the rows' fault; the rerun picks up from here
                raise
            return [exc] * len(of_key), 0
        return synced.outcomes, synced.deleted


def _count(summary: CsvSummary, rows: Sequence[Row], outcomes: Sequence[Outcome]) -> None:
    for r, outcome in zip(rows, outcomes, strict=True):
        if isinstance(outcome, Added):
            if outcome.created:
                summary.imported += 1
            else:
                summary.already += 1
        else:
            summary.failed.append(RowFailure(r.line, r.key, status_of(outcome), outcome.reason, outcome.msg))


REPORT_COLUMNS = ("line", "key", "code", "reason", "message")


def _write_report(path: Path, failed: Sequence[RowFailure]) -> Path | None:
    """List the failed rows in `path` (UTF-8 with a BOM, so Excel shows non-ASCII messages); None when none failed.

    A report left by an earlier run is removed when no row failed: it would list rows that are fine now.
    """
    if not failed:
        path.unlink(missing_ok=True)
        return None
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(REPORT_COLUMNS)
        writer.writerows((f.line, f.key, f.code, f.reason, f.message) for f in failed)
    return path


def import_csv(
    settings: Settings,
    embedder: Embedder,
    store: VectorStore,
    csv_path: Path,
    rows: list[Row],
    sync: bool = False,
    progress: bool = True,
) -> CsvSummary:
    """Import the rows of a CSV file of products (read_rows, with the same `sync`) into a connected store."""
    deps = build_deps(settings, store, embedder)
    try:
        return CsvImport(deps, progress).run(csv_path, rows, sync)
    finally:
        deps.close()
