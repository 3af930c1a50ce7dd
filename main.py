"""imgsim entry point: `python main.py [serve]` runs the API; `python main.py import DIR` bulk-imports a folder
(`python main.py import products.csv` a CSV file of products); `python main.py calibrate DIR [--int8]` calibrates
the duplicate threshold (and the INT8 model) on your images; `python main.py duplicates [--csv FILE | --json FILE]`
writes a namespace's duplicate groups for review; `python main.py reindex --from OLD [--service URL]` copies every
record of collection OLD into MILVUS_COLLECTION, re-embedded with the configured model."""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import ValidationError

from conf import Settings, load_settings
from conf.errors import Conflict, NotReady, StartupError
from conf.settings import CALIBRATION_IMAGES, MODEL_BATCH, Precision
from service.logs import configure_logging

if TYPE_CHECKING:  # the real imports are deferred: `--help` must not load the model
    from model.embedder import Embedder
    from service.store.meta import DuplicateThreshold
    from service.store.records import CollectionInfo
    from service.usecases.reindex import OldCatalog


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="main.py", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the HTTP API (the default)")
    imp = sub.add_parser(
        "import",
        help="embed and store every image below a folder, or every row of a .csv file of products (rerun-safe)",
    )
    imp.add_argument(
        "folder",
        type=Path,
        help="folder to import (searched recursively), or a .csv file with a header row: key, path or url, "
        "imgPath, namespace, and attrs (JSON) or one column per attribute",
    )
    imp.add_argument(
        "--key",
        choices=("md5", "filename"),
        default=None,
        help="folders: record key: the image MD5 (default) or the file name without extension "
        "(a CSV file has a key column)",
    )
    imp.add_argument(
        "--move-to",
        type=Path,
        default=None,
        help="move each image here once stored (the stored filepath is the new location)",
    )
    imp.add_argument(
        "--namespace",
        default="",
        help='the namespace (tenant) the images belong to (default: the default namespace ""; '
        "in a CSV file, a row's namespace cell wins)",
    )
    imp.add_argument(
        "--batch-size", type=int, default=MODEL_BATCH, help=f"images per model call (default {MODEL_BATCH})"
    )
    imp.add_argument(
        "--sync",
        action="store_true",
        help="CSV files: make every key of the file hold exactly its listed images (like set/key: images of the key "
        "not listed are deleted, unless a row of the key failed)",
    )
    imp.add_argument("--no-progress", action="store_true", help="no progress bar")
    cal = sub.add_parser(
        "calibrate",
        help="derive the duplicate threshold on your images (and with --int8 or "
        "MODEL_PRECISION=int8, quantize the model to INT8 on them)",
    )
    cal.add_argument("folder", type=Path, help="folder of your own images (searched recursively)")
    cal.add_argument("--int8", action="store_true", help="also quantize to INT8 (as MODEL_PRECISION=int8 does)")
    cal.add_argument(
        "--match-fp32",
        action="store_true",
        help="with --int8: keep the layers that drift in FP32 until INT8 vectors can share FP32's "
        "collections (slower than plain INT8; not saved if held-out images miss the gate)",
    )
    cal.add_argument(
        "--limit",
        type=int,
        default=CALIBRATION_IMAGES,
        help=f"images to read, spread over the folder (default {CALIBRATION_IMAGES})",
    )
    cal.add_argument("--no-progress", action="store_true", help="no progress bar")
    dup = sub.add_parser(
        "duplicates",
        help="find the duplicate groups of a namespace (same MD5, or a score at least the duplicate threshold) "
        "and write them for review",
    )
    dup.add_argument("--namespace", default="", help='the namespace to scan (default: the default namespace "")')
    dup.add_argument(
        "--min-score",
        type=float,
        default=None,
        help="pair records scoring at least this, above 0 and at most 1 (default: the duplicate threshold in "
        "force: DUPLICATE_SCORE, else calibrated, else the model's default)",
    )
    dup.add_argument(
        "--filter",
        default=None,
        help='scan only records whose attributes meet this JSON filter, e.g. \'{"shop": "x"}\'',
    )
    out = dup.add_mutually_exclusive_group()
    out.add_argument("--csv", type=Path, default=None, help="write one row per grouped record to this CSV file")
    out.add_argument("--json", type=Path, default=None, help="write the groups to this JSON file (default: stdout)")
    dup.add_argument("--no-progress", action="store_true", help="no progress bar")
    rx = sub.add_parser(
        "reindex",
        help="copy every record of collection OLD (every namespace) into MILVUS_COLLECTION, re-embedded with the "
        "configured model (rerun-safe: a rerun continues, and is a no-op once both agree)",
    )
    rx.add_argument(
        "--from",
        dest="old",
        required=True,
        metavar="OLD",
        help="the old collection: in the same MILVUS_URI, or the one the --service serves",
    )
    rx.add_argument(
        "--service",
        default=None,
        metavar="URL",
        help="read OLD through the running old service at URL (e.g. http://127.0.0.1:7000), which keeps serving and "
        "writing meanwhile: what Milvus Lite needs (it opens a file in one process at a time); MILVUS_URI is then "
        "a new file for the new collection. Sends REINDEX_TOKEN (else TOKEN), which must be an admin token",
    )
    rx.add_argument(
        "--threshold",
        choices=("default", "derive"),
        default="default",
        help="the duplicate threshold of the new collection: the model's default (default), or derive one by "
        "calibrating on the records' images (as `main.py calibrate` does)",
    )
    rx.add_argument(
        "--switch-alias",
        default=None,
        metavar="NAME",
        help="Milvus servers: at the end, point alias NAME at the new collection (services reading through it move)",
    )
    rx.add_argument(
        "--batch-size", type=int, default=MODEL_BATCH, help=f"images per model call and write (default {MODEL_BATCH})"
    )
    rx.add_argument(
        "--missing-csv",
        type=Path,
        default=Path("reindex-missing.csv"),
        help="where the records without source are listed (default ./reindex-missing.csv)",
    )
    rx.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _import(settings: Settings, args: argparse.Namespace) -> int:
    from model.embedder import load_embedder  # noqa: PLC0415 - keep `--help` fast: no model import
    from service.runtime import open_store  # noqa: PLC0415 - pymilvus and Flask only for a command that needs them
    from service.store.filters import NamespaceError, check_namespace  # noqa: PLC0415 - as above: pymilvus
    from service.usecases.importer import Importer  # noqa: PLC0415 - as above: the model

    is_csv = args.folder.suffix.lower() == ".csv" and not args.folder.is_dir()
    if not is_csv and not args.folder.is_dir():
        print(f"error: {args.folder} is not a folder (nor a .csv file)", file=sys.stderr)
        return 2
    folder_only = [opt for opt, given in (("--key", args.key), ("--move-to", args.move_to)) if given is not None]
    if is_csv and folder_only:
        print(
            f"error: {', '.join(folder_only)} apply to folders; a CSV file names keys in its key column",
            file=sys.stderr,
        )
        return 2
    if not 1 <= args.batch_size <= 256:  # BATCH_MAX_SIZE's range: the CSV import batches through that queue
        print(f"error: --batch-size {args.batch_size}: use 1 to 256", file=sys.stderr)
        return 2
    if args.sync and not is_csv:
        print("error: --sync applies to CSV files (a folder import only adds)", file=sys.stderr)
        return 2
    try:
        check_namespace(args.namespace)  # before the model loads: a typo costs no wait
    except NamespaceError as exc:
        print(f"error: --namespace {args.namespace!r}: {exc}", file=sys.stderr)
        return 2
    if is_csv:
        return _import_csv(settings, args)
    embedder = load_embedder(settings)
    store = open_store(settings, embedder)
    store.connect()
    try:
        summary = Importer(settings, embedder, store, batch_size=args.batch_size).run(
            args.folder,
            key_mode=args.key or "md5",
            move_to=args.move_to,
            progress=not args.no_progress,
            namespace=args.namespace,
        )
    except Conflict as exc:  # a collection of an earlier imgsim holds the default namespace only
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    print("\n".join(summary.lines()))
    return 0 if not summary.failed else 1


def _import_csv(settings: Settings, args: argparse.Namespace) -> int:
    """`import products.csv`: exit 1 when a row failed (listed in the report), 2 when the file is unusable."""
    from model.embedder import load_embedder  # noqa: PLC0415 - keep `--help` fast: no model import
    from service.csv_import import CsvFileError, import_csv, read_rows  # noqa: PLC0415 - as above: Flask
    from service.runtime import open_store  # noqa: PLC0415 - pymilvus only for a command that needs it

    try:
        rows = read_rows(args.folder, settings, args.namespace, args.sync)  # before the model loads: no wait
    except CsvFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # The rows' images reach the model through the service's batching queue: --batch-size is its batch size.
    settings = settings.model_copy(update={"batch_max_size": args.batch_size})
    embedder = load_embedder(settings)
    store = open_store(settings, embedder)
    store.connect()
    try:
        summary = import_csv(
            settings, embedder, store, args.folder, rows, sync=args.sync, progress=not args.no_progress
        )
    except NotReady as exc:  # Milvus went away mid-import: the rows before are stored
        print(
            f"error: {exc}; run the same command again once Milvus answers (nothing is stored twice)", file=sys.stderr
        )
        return 2
    finally:
        store.close()
    print("\n".join(summary.lines()))
    return 0 if not summary.failed else 1


def _calibrate(settings: Settings, args: argparse.Namespace) -> int:
    from model.embedder import load_embedder, model_spec, quantize_int8  # noqa: PLC0415 - keep `--help` fast
    from service.usecases import calibrate  # noqa: PLC0415 - as above: the model and pymilvus

    if not args.folder.is_dir():
        print(f"error: {args.folder} is not a folder", file=sys.stderr)
        return 2
    if args.int8 or args.match_fp32:
        settings = settings.model_copy(update={"model_precision": Precision.INT8})
    images = calibrate.read_images(args.folder, settings, args.limit, progress=not args.no_progress)
    if settings.model_precision is Precision.INT8:
        from model.openvino_engine import GateMissed  # noqa: PLC0415 - OpenVINO only when INT8 is calibrated

        try:
            inputs = calibrate.preprocessed(model_spec(settings).preprocess, images)
            found = quantize_int8(settings, inputs, args.match_fp32)
        except ValueError as exc:  # too few images, or images that look like noise
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except GateMissed as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print("\n".join(found.lines()))
    embedder = load_embedder(settings)
    scores = calibrate.score(embedder, images, progress=not args.no_progress)
    threshold = scores.threshold()
    print("\n".join(calibrate.report(scores, threshold)))
    result = replace(scores.summary(threshold, len(images)), space=embedder.fingerprint.digest)
    return _store_threshold(settings, embedder, result)


def _store_threshold(settings: Settings, embedder: Embedder, result: DuplicateThreshold) -> int:
    """Store a calibrated threshold with the collection; on failure say how to apply it by hand."""
    from service.runtime import open_store  # noqa: PLC0415 - pymilvus only for a command that stores

    store = open_store(settings, embedder)
    try:
        store.connect()
        where = store.save_duplicate_threshold(result)
    except (StartupError, NotReady) as exc:
        print(
            f"error: the threshold was not stored ({exc}). Set DUPLICATE_SCORE={result.score} to use it anyway.",
            file=sys.stderr,
        )
        return 1
    finally:
        store.close()
    print(
        f"stored in {where} for embedding space {embedder.fingerprint}; a running service uses it from its "
        "next start (DUPLICATE_SCORE, if set, still wins)"
    )
    return 0


def _duplicates(settings: Settings, args: argparse.Namespace) -> int:
    from tqdm import tqdm  # noqa: PLC0415 - keep `--help` fast

    from model.embedder import load_embedder  # noqa: PLC0415 - as above: the model
    from service.runtime import open_store  # noqa: PLC0415 - as above: pymilvus
    from service.store.filters import (  # noqa: PLC0415 - as above
        FilterError,
        NamespaceError,
        check_namespace,
        compile_filter,
    )
    from service.usecases.deps import duplicate_threshold  # noqa: PLC0415 - as above
    from service.usecases.duplicates import checked_scan_filter, scan_namespace  # noqa: PLC0415 - as above

    try:  # every argument is checked before the model loads: a typo costs no wait
        check_namespace(args.namespace)
    except NamespaceError as exc:
        print(f"error: --namespace {args.namespace!r}: {exc}", file=sys.stderr)
        return 2
    if args.min_score is not None and not 0.0 < args.min_score <= 1.0:
        print(f"error: --min-score {args.min_score}: it must be above 0 and at most 1", file=sys.stderr)
        return 2
    try:
        filter_value = None if args.filter is None else json.loads(args.filter)
        compile_filter(filter_value)
    except FilterError as exc:
        print(f"error: --filter: {exc}", file=sys.stderr)
        return 2
    except ValueError:
        print(f'error: --filter {args.filter!r} is not JSON; for example --filter \'{{"shop": "x"}}\'', file=sys.stderr)
        return 2
    embedder = load_embedder(settings)
    store = open_store(settings, embedder)
    try:
        store.connect()
        try:  # the filter was checked above: what is left is the collection refusing it
            scope, expr = checked_scan_filter(store, args.namespace, filter_value)
        except Conflict as exc:  # a filter on a collection of an earlier imgsim, without attrs
            print(f"error: {exc.msg}", file=sys.stderr)
            return 2
        score = args.min_score
        if score is None:
            score = duplicate_threshold(settings, store, embedder.duplicate_default, embedder.info)[0]
        with tqdm(total=0, unit="rec", disable=args.no_progress, desc="compare", file=sys.stderr) as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            result = scan_namespace(store, scope, score, expr, progress)
    finally:
        store.close()
    report = {
        "namespace": args.namespace,
        "min_score": score,
        "records_total": result.records_total,
        "groups": result.described,
    }
    if args.csv is not None:
        with args.csv.open("w", newline="", encoding="utf-8") as file:
            _write_groups_csv(file, result.described)
    elif args.json is not None:
        args.json.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    else:
        print(json.dumps(report, ensure_ascii=False, indent=1))
    grouped = sum(g["size"] for g in result.described)
    print(
        f"{len(result.described)} duplicate groups holding {grouped} of {result.records_total} records in namespace "
        f"{args.namespace!r} (min_score {score:g}), found in {result.seconds:.1f} s"
        + (f"; written to {args.csv or args.json}" if args.csv or args.json else ""),
        file=sys.stderr,
    )
    return 0


# Test-only: seconds to sleep after each written batch of a reindex, so a test can write to the old service,
# or SIGKILL the reindex, while it runs (tests/test_reindex.py). Not a setting: nothing else reads it.
REINDEX_PACE_ENV = "IMGSIM_TEST_REINDEX_PACE"
# What a paced reindex prints after each written batch: on Milvus Lite a test cannot read the new file the
# reindex holds, so it counts these lines instead.
REINDEX_PACED = "reindex pace: a batch is written"
REINDEX_DOCS = "docs/operations.md, section 'Change the model: reindex'"


def _open_old(settings: Settings, args: argparse.Namespace) -> tuple[OldCatalog, CollectionInfo] | int:
    """The old collection of `reindex` (in MILVUS_URI, or through --service) and what it is; or the exit code 2,
    having said why. Runs before the model loads: a wrong name, or a held Lite file, costs no wait."""
    from service.store.records import DataDirHeld  # noqa: PLC0415 - keep `--help` fast: no pymilvus
    from service.usecases.reindex import check_new_file, open_old  # noqa: PLC0415 - as above

    service = args.service
    if service is not None and not service.startswith(("http://", "https://")):
        print(f"error: --service {service!r}: give the old service's URL, e.g. http://127.0.0.1:7000", file=sys.stderr)
        return 2
    secret = settings.reindex_token or settings.token
    # milvus_lite logs a traceback when its file is held; the messages below say what it means.
    logging.getLogger("milvus_lite").setLevel(logging.CRITICAL)
    try:
        if service is not None:
            check_new_file(settings)
        return open_old(settings, args.old, service, secret.get_secret_value() if secret else None)
    except DataDirHeld as exc:
        if service is not None:
            print(
                f"error: {exc}. With --service the old service keeps its file: set MILVUS_URI to a new file for the "
                f"new collection (e.g. MILVUS_URI=./data/milvus-v2.db). See {REINDEX_DOCS}.",
                file=sys.stderr,
            )
        else:
            print(
                f"error: {exc}. To reindex while the service keeps answering, pass --service http://HOST:PORT (the "
                "running service's URL) with MILVUS_URI set to a new file for the new collection; or stop the "
                f"service that uses it and run the reindex again. See {REINDEX_DOCS}.",
                file=sys.stderr,
            )
    except (StartupError, NotReady) as exc:
        print(f"error: {exc}", file=sys.stderr)
    return 2


def _paced(seconds: float) -> None:
    """The test-only pace: say that a batch is written, then sleep."""
    import time  # noqa: PLC0415 - only the test-only pace needs it

    print(REINDEX_PACED, file=sys.stderr, flush=True)
    time.sleep(seconds)


def _reindex(settings: Settings, args: argparse.Namespace) -> int:
    """`reindex --from OLD`: exit 0 when every record was copied, 1 when records without source were left out,
    2 when refused (nothing was written; or, after the copy, --switch-alias was)."""
    from tqdm import tqdm  # noqa: PLC0415 - keep `--help` fast

    from model.embedder import load_embedder  # noqa: PLC0415 - as above: the model
    from service.runtime import open_store  # noqa: PLC0415 - as above: pymilvus
    from service.store.meta import SpaceTag  # noqa: PLC0415 - as above
    from service.thumbs import Sources, Thumbnails  # noqa: PLC0415 - as above
    from service.usecases.reindex import Finder, Reindex, copy, finish  # noqa: PLC0415 - as above

    if not 1 <= args.batch_size <= 256:
        print(f"error: --batch-size {args.batch_size}: use 1 to 256", file=sys.stderr)
        return 2
    opened = _open_old(settings, args)
    if isinstance(opened, int):
        return opened
    old, old_info = opened
    store = None
    pace_seconds = float(os.environ.get(REINDEX_PACE_ENV) or 0)
    try:
        embedder = load_embedder(settings)
        store = open_store(settings, embedder)
        with tqdm(total=0, unit="rec", disable=args.no_progress, file=sys.stderr) as bar:

            def progress(number: int, done: int, total: int) -> None:
                if bar.n > done or bar.total != total:  # a new pass
                    bar.reset(total=total)
                bar.set_description("copy" if number == 1 else f"catch-up {number - 1}")
                bar.update(done - bar.n)

            run = Reindex(
                settings,
                embedder,
                SpaceTag(embedder.fingerprint.digest, embedder.fingerprint.summary),
                old,
                store,
                Finder(settings, Sources(settings.source_dir), Thumbnails(settings.thumb_dir)),
                batch_size=args.batch_size,
                progress=progress,
                pace=(lambda: _paced(pace_seconds)) if pace_seconds > 0 else None,
            )
            summary = copy(run, old_info)
        summary = finish(
            run,
            summary,
            threshold=args.threshold,
            switch_alias=args.switch_alias,
            missing_path=args.missing_csv,
            calibration_progress=not args.no_progress,
        )
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except NotReady as exc:
        print(f"error: {exc}; run the same command again once Milvus answers (it continues)", file=sys.stderr)
        return 2
    finally:
        old.close()
        if store is not None:
            store.close()
    print("\n".join(summary.lines()))
    if summary.alias_refused:
        return 2
    return 1 if summary.missing else 0


def _write_groups_csv(file: TextIO, groups: list[dict[str, Any]]) -> None:
    """One row per listed record: its group (1 = the largest), the group's size and capped, then the record."""
    writer = csv.writer(file)
    writer.writerow(["group", "size", "capped", "id", "key", "md5", "filepath", "score", "attrs", "region"])
    for number, group in enumerate(groups, start=1):
        for r in group["records"]:
            writer.writerow(
                [
                    number,
                    group["size"],
                    "true" if group["capped"] else "false",
                    r["id"],
                    r["key"],
                    r["md5"],
                    r["filepath"],
                    r["score"],
                    json.dumps(r["attrs"], ensure_ascii=False),
                    json.dumps(r["region"]),
                ]
            )


def _cap_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas (as MALLOC_ARENA_MAX=2 would) unless the environment sets it.

    glibc gives allocating threads arenas of their own, up to 8 per core, and rarely hands their
    freed memory back: after a burst of large uploads the 16 request threads' arenas kept ~450 MB
    that the service no longer used, on top of its real working set. Call before threads start.
    """
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl has no mallopt): nothing to cap
        ctypes.CDLL(None).mallopt(-8, arenas)  # -8 = M_ARENA_MAX


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, load settings once, and run the command; returns the exit code."""
    args = _parser().parse_args(argv)
    _cap_malloc_arenas()
    try:
        settings = load_settings()
    except ValidationError as exc:
        print(f"error: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format.value)
    # Milvus Lite's in-process gRPC server logs a traceback for every RPC it does not
    # implement (pymilvus probes AllocTimestamp after create_index); that is noise, not failure.
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    # pymilvus logs every failed call as an ERROR with a traceback, also the ones the store expects
    # (an index type the server refuses before the next is tried) or turns into a 503 with its own
    # one-line message; the store's messages say what happened.
    logging.getLogger("pymilvus.decorators").setLevel(logging.CRITICAL)
    try:
        if args.command == "import":
            return _import(settings, args)
        if args.command == "calibrate":
            return _calibrate(settings, args)
        if args.command == "duplicates":
            return _duplicates(settings, args)
        if args.command == "reindex":
            return _reindex(settings, args)
        from service.runtime import serve  # noqa: PLC0415 - the whole service only for `serve`

        serve(settings)
        return 0
    except (StartupError, NotReady) as exc:
        logging.getLogger("imgsim").critical("cannot start: %s", exc)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
