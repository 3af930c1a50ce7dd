"""`python main.py import products.csv`: a CSV file of products with their images and attributes, end to end.

Real model (random weights), real Milvus Lite, real HTTP: the URL rows are fetched from a loopback image host.
"""

from __future__ import annotations

import csv
import hashlib
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conf.settings import Settings
from model.embedder import Embedder
from service.csv_import import CsvFileError, CsvSummary, import_csv, read_rows, report_path
from service.store.records import VectorStore
from service.usecases.add import AddRequest
from tests.conftest import ROOT, LiveService, make_settings, photo
from tests.test_importer import run_import

GOOD = 195
PER_KEY = 3
HEADER = ["key", "path", "url", "price", "stock", "code", "tags", "shop", "note"]


def run_cli(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python main.py import ...` as a user runs it, on the test's own Milvus Lite file."""
    return run_import(folder, *args, MILVUS_COLLECTION="products", PATH_ROOTS=str(folder / "shared"))


def cli_settings(folder: Path) -> Settings:
    """The settings run_cli gives the CLI, for the same store in this process."""
    return make_settings(
        folder,
        milvus_uri=str(folder / "milvus.db"),
        milvus_collection="products",
        thumb_dir=folder / "thumbs",
        path_roots=str(folder / "shared"),
    )


class Catalog:
    """A 200-row CSV file of products and the images it names (relative paths, absolute paths, loopback URLs)."""

    def __init__(self, folder: Path, serve: Callable[[bytes], str]) -> None:
        self.folder = folder
        self.csv = folder / "shop" / "products.csv"
        (folder / "shop" / "photos" / "sub").mkdir(parents=True)
        (folder / "shared").mkdir()
        self.images: dict[int, bytes] = {}
        self.rows: list[dict[str, str]] = []
        for i in range(GOOD):
            data = photo(1000 + i, size=(160, 120))
            self.images[i] = data
            row = {"key": "" if i % 40 == 7 else f"SKU-{i // PER_KEY:03d}"}
            if i % 4 == 0:
                row["url"] = serve(data)
            elif i % 4 == 1:  # absolute, below PATH_ROOTS
                path = folder / "shared" / f"p{i}.jpg"
                path.write_bytes(data)
                row["path"] = str(path)
            else:  # relative to the CSV file's folder
                name = f"photos/sub/p{i}.jpg" if i % 3 else f"photos/p{i}.jpg"
                (self.csv.parent / name).write_bytes(data)
                row["path"] = name
            row.update(price=f"{i}.5", stock=str(i), code="007" if i % 2 else "nan", tags="red|sale| ", shop="旗舰店")
            if i == 10:
                row["note"] = "two\nlines"  # a quoted value over two lines: later rows start a line further down
            self.rows.append(row)
        (self.csv.parent / "photos" / "notes.jpg").write_text("not an image")
        (folder / "outside.jpg").write_bytes(photo(5))
        self.bad = {  # row index before which the bad row goes -> (the row, reason)
            20: ({"key": "SKU-900", "path": "photos/missing.jpg"}, "bad_input"),
            50: ({"key": "SKU-901", "path": "photos/notes.jpg"}, "not_decodable"),
            90: ({"key": "SKU-902", "path": "photos/p2.jpg", "url": serve(photo(3))}, "bad_input"),
            120: ({"key": "K" * 600, "path": "photos/p2.jpg"}, "bad_input"),
            # the key of good rows: that key is not synced (none of its images deleted) while a row of it fails
            150: ({"key": "SKU-050", "path": "../outside.jpg"}, "forbidden"),
        }

    def write(self, skip: frozenset[int] = frozenset()) -> dict[int, int]:
        """Write the file (UTF-8 with a BOM, as Excel does; a blank line in it), leaving out the good rows `skip`;
        returns the line each bad row starts on."""
        lines: dict[int, int] = {}
        with self.csv.open("w", encoding="utf-8-sig", newline="") as fh:
            writer = csv.DictWriter(fh, HEADER)
            writer.writeheader()
            line = 2
            for i, row in enumerate(self.rows):
                if i in self.bad:
                    lines[i] = line
                    writer.writerow(self.bad[i][0])
                    line += 1
                if i == 100:
                    fh.write("\r\n")  # a blank line: skipped, but it counts
                    line += 1
                if i not in skip:
                    writer.writerow(row)
                    line += 1 + row.get("note", "").count("\n")
        return lines


def report(path: Path) -> list[dict[str, str]]:
    with report_path(path).open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def stored(store: VectorStore, keys: list[str], namespace: str = "") -> list[dict[str, Any]]:
    return store.get_keys(store.scope(namespace), keys)


def rerun(settings: Settings, embedder: Embedder, path: Path, sync: bool = False, namespace: str = "") -> CsvSummary:
    """The import again, in this process (the same code as the CLI's, without loading another model)."""
    store = VectorStore(settings, embedder.dim)
    store.connect()
    try:
        return import_csv(settings, embedder, store, path, read_rows(path, settings, namespace, sync), sync, False)
    finally:
        store.close()


def test_csv_import_stores_good_rows_reports_bad_ones_reruns_and_syncs(
    tmp_path: Path,
    image_host: Callable[[bytes], str],
    embedder: Embedder,
    start_service: Callable[..., LiveService],
) -> None:
    folder = tmp_path / "cli"
    catalog = Catalog(folder, image_host)
    bad_lines = catalog.write()
    assert sum(1 for _ in csv.reader(catalog.csv.open(encoding="utf-8-sig"))) == 1 + GOOD + 5 + 1  # + blank line

    first = run_cli(folder, str(catalog.csv))
    assert first.returncode == 1, first.stderr  # 1: some rows failed
    out = first.stdout
    assert "rows: 200" in out and "imported: 195" in out and "already stored: 0" in out, out
    assert f"failed: 5 (each listed with its line in {report_path(catalog.csv)})" in out, out

    # The report: each bad row by the line it starts on, with the code, reason and message the API gives.
    rows = report(catalog.csv)
    assert [int(r["line"]) for r in rows] == sorted(bad_lines.values())
    assert [r["reason"] for r in rows] == [catalog.bad[i][1] for i in sorted(catalog.bad)]
    assert [r["code"] for r in rows] == ["400", "415", "400", "400", "403"]
    missing, not_image, both, long_key, escaping = rows
    assert missing["key"] == "SKU-900"
    assert "photos/missing.jpg' does not exist" in missing["message"]
    assert "not a decodable image" in not_image["message"]
    assert "exactly one of the columns 'path' or 'url' (this one has both)" in both["message"]
    assert long_key["key"] == "K" * 600
    assert "'../outside.jpg' leads outside the CSV file's folder" in escaping["message"]
    # ... the very messages add/batch answers for those items
    svc = start_service()
    answer = svc.post(
        "add/batch", json={"items": [{"url": image_host(photo(4)), "key": "K" * 600}, {"path": "/nonexistent.jpg"}]}
    ).json()["data"]
    assert long_key["message"] == answer[0]["msg"] and answer[0]["code"] == 400
    assert not_image["message"] == svc.post("add/base64", json={"base64": "bm90IGFuIGltYWdl"}).json()["msg"]

    settings = cli_settings(folder)
    store = VectorStore(settings, embedder.dim)
    store.connect()
    try:
        assert store.count(store.scope()) == GOOD
        product = stored(store, ["SKU-000"])
        assert len(product) == PER_KEY  # several rows, one key: the product's images
        first_row = next(r for r in product if r["md5"] == hashlib.md5(catalog.images[0]).hexdigest())
        # numbers become numbers (int for integral text), "007" and "nan" stay text, tags a list, UTF-8 kept
        assert first_row["attrs"] == {
            "price": 0.5,
            "stock": 0,
            "code": "nan",
            "tags": ["red", "sale"],
            "shop": "旗舰店",
        }
        second = next(r for r in product if r["md5"] == hashlib.md5(catalog.images[1]).hexdigest())
        assert second["attrs"]["code"] == "007" and second["filepath"] == str(folder / "shared" / "p1.jpg")
        third = next(r for r in product if r["md5"] == hashlib.md5(catalog.images[2]).hexdigest())
        assert third["filepath"] == str(catalog.csv.parent.resolve() / "photos/sub/p2.jpg")  # relative: made absolute
        assert [r["attrs"].get("note") for r in stored(store, ["SKU-003"])].count("two\nlines") == 1
        unkeyed = hashlib.md5(catalog.images[7]).hexdigest()
        assert [r["key"] for r in stored(store, [unkeyed])] == [unkeyed]  # an empty key: the MD5
    finally:
        store.close()
    # Every stored image keeps its source for a reindex, like an add.
    kept = {p.stem for p in settings.source_dir.rglob("*.jpg")}
    assert kept == {hashlib.md5(catalog.images[i]).hexdigest() for i in range(GOOD)}

    # A rerun stores nothing twice.
    again = rerun(settings, embedder, catalog.csv)
    assert (again.imported, again.already, len(again.failed)) == (0, GOOD, 5)
    assert "imported: 0" in again.lines() and f"already stored: {GOOD}" in again.lines()

    # --sync after rows left the file: their images go, except for a key one of whose rows failed.
    gone = frozenset({3, 4, 30, 31, 33, 151})  # 151: a row of SKU-050, which also has the failing row
    catalog.write(skip=gone)
    synced = rerun(settings, embedder, catalog.csv, sync=True)
    assert (synced.imported, synced.already, len(synced.failed)) == (0, GOOD - len(gone), 5)
    assert synced.deleted == len(gone) - 1 and synced.keys_not_synced == ["SKU-900", "SKU-901", "SKU-902", "SKU-050"]
    assert any("not synced" in line and "'SKU-050'" in line for line in synced.lines())
    store = VectorStore(settings, embedder.dim)
    store.connect()
    try:
        assert store.count(store.scope()) == GOOD - len(gone) + 1
        md5s = {r["md5"] for r in stored(store, ["SKU-001", "SKU-010", "SKU-011", "SKU-050"])}
        assert {hashlib.md5(catalog.images[i]).hexdigest() for i in (3, 4, 30, 31, 33)}.isdisjoint(md5s)
        assert hashlib.md5(catalog.images[151]).hexdigest() in md5s  # kept: a row of SKU-050 failed
        assert len(stored(store, ["SKU-001"])) == 1  # rows 3 and 4 left, 5 stays
    finally:
        store.close()
    # The deleted images' sources went with them.
    assert kept - {p.stem for p in settings.source_dir.rglob("*.jpg")} == {
        hashlib.md5(catalog.images[i]).hexdigest() for i in (3, 4, 30, 31, 33)
    }


def test_json_attrs_column_namespaces_and_report_cleared(
    tmp_path: Path, embedder: Embedder, start_service: Callable[..., LiveService]
) -> None:
    folder = tmp_path / "cli"
    (folder / "shared").mkdir(parents=True)
    settings = cli_settings(folder)
    for i in range(3):
        (folder / f"p{i}.jpg").write_bytes(photo(300 + i))
    path = folder / "json.csv"
    bad_json = '{"colour": "red",}'
    lines = [
        "Key,Path,Namespace,attrs",  # known columns in any case
        'A-1,p0.jpg,shop-a,"{""colour"": ""red"", ""sizes"": [""38"", ""39""], ""price"": 10}"',
        f'A-2,p1.jpg,shop-a,"{bad_json.replace(chr(34), chr(34) * 2)}"',
        "A-3,p2.jpg,,",
        "A-4,p2.jpg,not a namespace!,",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")  # no BOM this time
    summary = rerun(settings, embedder, path, namespace="shop-b")
    assert (summary.imported, len(summary.failed)) == (2, 2)
    rows = report(path)
    assert [(r["line"], r["key"], r["reason"]) for r in rows] == [
        ("3", "A-2", "bad_attrs"),
        ("5", "A-4", "bad_namespace"),
    ]
    svc = start_service()
    api = svc.post("add/batch", json={"items": [{"path": "x.jpg", "attrs": bad_json}]}).json()["data"][0]
    assert rows[0]["message"] == api["msg"] and rows[0]["code"] == str(api["code"]) == "400"

    store = VectorStore(settings, embedder.dim)
    store.connect()
    try:
        assert stored(store, ["A-1"], "shop-a")[0]["attrs"] == {"colour": "red", "sizes": ["38", "39"], "price": 10}
        assert [r["key"] for r in stored(store, ["A-3"], "shop-b")] == ["A-3"]  # the default namespace of the run
        assert stored(store, ["A-1", "A-3"]) == []  # nothing in the default namespace
    finally:
        store.close()

    # The file fixed: no row fails, and the stale report is gone.
    path.write_text("\n".join(lines[:2] + lines[3:4]) + "\n", encoding="utf-8")
    summary = rerun(settings, embedder, path, namespace="shop-b")
    assert (summary.imported, summary.already, summary.failed) == (0, 2, [])
    assert not report_path(path).exists()


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "the first line is empty"),
        (b"key,name\nA,x\n", "neither a 'path' nor a 'url' column"),
        (b"key,path,attrs,colour\n", "not both"),
        (b"key,path,unit price\n", "'unit price' is not a usable attribute name"),
        (b"key,path\nA,\xff\xfe.jpg\n", "is not UTF-8 text (line 2)"),
        (b"key;path;price\nA;a.jpg;1\n", "is one column: separate the columns with commas"),
    ],
)
def test_unusable_files_are_refused_before_anything_is_stored(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "products.csv"
    path.write_bytes(content)
    with pytest.raises(CsvFileError) as info:
        read_rows(path, make_settings(tmp_path), "")
    assert words in str(info.value)


def test_attribute_cells_become_numbers_tags_or_text(tmp_path: Path) -> None:
    cells = {
        "int": "12",
        "neg": "-3.5",
        "exp": "1e3",
        "half": ".5",
        "zero": "0.25",
        "spaced": " 5 ",
        "code": "007",
        "nan": "nan",
        "inf": "inf",
        "big": "9007199254740993",  # beyond 2^53-1: kept exact, as text
        "comma": "1,5",
        "under": "1_000",
        "empty": "",
        "tags": "a| b ||c",
    }
    path = tmp_path / "products.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([["key", "path", *cells], ["A", "a.jpg", *cells.values()]])
    (row,) = read_rows(path, make_settings(tmp_path), "")
    assert isinstance(row.request, AddRequest), row.request
    assert row.request.attrs == {
        "int": 12,
        "neg": -3.5,
        "exp": 1000.0,
        "half": 0.5,
        "zero": 0.25,
        "spaced": 5,
        "code": "007",
        "nan": "nan",
        "inf": "inf",
        "big": "9007199254740993",
        "comma": "1,5",
        "under": "1_000",
        "tags": ["a", "b", "c"],
    }
    assert type(row.request.attrs["int"]) is int and type(row.request.attrs["exp"]) is float


def test_cli_exit_status_2_names_the_expected_columns(tmp_path: Path) -> None:
    path = tmp_path / "products.csv"
    path.write_text("sku,image\nA,a.jpg\n", encoding="utf-8")
    done = run_cli(tmp_path, str(path))
    assert done.returncode == 2
    assert "'path' (an image file; relative to the CSV's folder) and/or 'url'" in done.stderr
    missing = run_cli(tmp_path, str(tmp_path / "absent.csv"))
    assert missing.returncode == 2 and "cannot be read" in missing.stderr
    assert run_cli(tmp_path, str(path), "--move-to", str(tmp_path)).returncode == 2


def docs_example(page: Path) -> str:
    """The example CSV file a page shows."""
    blocks = re.findall(r"```csv\n(.*?)```", page.read_text("utf-8"), flags=re.S)
    assert len(blocks) == 1, page
    return blocks[0]


def test_the_docs_example_file_imports_as_shown(
    tmp_path: Path, image_host: Callable[[bytes], str], embedder: Embedder
) -> None:
    example = docs_example(ROOT / "docs" / "deployment.md")
    assert docs_example(ROOT / "docs" / "zh-CN" / "deployment.md") == example
    folder = tmp_path / "cli"
    (folder / "shared").mkdir(parents=True)
    images = {}
    for n, name in enumerate(re.findall(r"photos/[\w.-]+", example)):
        images[name] = photo(500 + n)
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(images[name])
    url = "https://img.example.com/1002.jpg"  # no internet here: the loopback host serves it
    path = folder / "products.csv"
    path.write_text(example.replace(url, image_host(photo(600))), encoding="utf-8")
    settings = cli_settings(folder)
    summary = rerun(settings, embedder, path)
    assert (summary.imported, summary.failed) == (4, [])
    store = VectorStore(settings, embedder.dim)
    store.connect()
    try:
        shoes = stored(store, ["SKU-1001"])
        assert len(shoes) == 2
        assert shoes[0]["attrs"] == {"category": "shoes", "price": 49.9, "tags": ["red", "sale"], "shop": "旗舰店"}
        assert stored(store, ["SKU-1002"])[0]["attrs"] == {"category": "bags", "price": 120, "shop": "outlet"}
        misc = hashlib.md5(images["photos/misc.jpg"]).hexdigest()
        assert [(r["filepath"], r["attrs"]) for r in stored(store, [misc])] == [
            ("catalog/misc.jpg", {"category": "bags", "price": 0.5})
        ]
    finally:
        store.close()
