"""Thumbnails (service/thumbs.py, GET /api/image/sim/thumb/<id>): written with the record, shared by records of
the same image, removed with the last of them, made on first view for records stored before, served only
with the token, and never a picture other than the record's. And the kept sources (SOURCE_DIR), what a reindex
re-embeds from: the same folder scheme, carrying the original's size."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.images import decode_image
from service import thumbs
from service.thumbs import SOURCE_SIDE, THUMB_SIDE, KeptSource, Sources, Thumbnails, make_source, make_thumbnail
from tests.conftest import LiveService, photo

TOKEN = "thumb-T0ken"


def md5(data: bytes) -> str:
    """The hex MD5 of some bytes."""
    return hashlib.md5(data).hexdigest()


def webp_size(data: bytes) -> tuple[int, int]:
    """The size of a WEBP image, checking it is one."""
    img = Image.open(io.BytesIO(data))
    assert img.format == "WEBP"
    return img.size


def ids_of(svc: LiveService, key: str) -> list[int]:
    """The ids stored under one key."""
    return [r["id"] for r in svc.post("get/key", json={"key": [key]}).json()["data"]]


def test_folder_layout_atomic_writes_and_forget(tmp_path: Path) -> None:
    """Two-level fan-out by MD5, no temporary file left behind, and forget() removes only unused images."""
    thumbs = Thumbnails(tmp_path / "thumbs")
    big = Image.open(io.BytesIO(photo(1, size=(1200, 800))))
    small = Image.open(io.BytesIO(photo(2, size=(90, 60))))
    assert make_thumbnail(big).size == (THUMB_SIDE, 171) and make_thumbnail(small).size == (90, 60)  # never enlarged
    a, b = md5(b"a"), md5(b"b")
    thumbs.write(a, make_thumbnail(big))
    thumbs.write_many([(b, make_thumbnail(small)), (a, None)])
    assert thumbs.path_of(a) == tmp_path / "thumbs" / a[:2] / a[2] / f"{a}.webp"
    assert sorted(p.name for p in (tmp_path / "thumbs").rglob("*") if p.is_file()) == sorted([f"{a}.webp", f"{b}.webp"])
    assert webp_size(thumbs.read(a) or b"") == (THUMB_SIDE, 171)
    assert thumbs.forget([a, b], in_use=lambda md5s: {b}) == 1
    assert thumbs.read(a) is None and thumbs.read(b) is not None
    for bad in ("../../etc/passwd", "A" * 32, "0" * 31):
        with pytest.raises(ValueError):
            thumbs.path_of(bad)
    assert thumbs.forget(["../x"], in_use=lambda md5s: set()) == 0


def test_concurrent_writers_of_one_image_leave_one_whole_file(tmp_path: Path) -> None:
    """Eight threads writing the same thumbnail at once: one complete file, no temporary files."""
    thumbs = Thumbnails(tmp_path / "thumbs")
    thumb = make_thumbnail(Image.open(io.BytesIO(photo(3, size=(640, 480)))))
    key = md5(b"same")
    threads = [threading.Thread(target=thumbs.write, args=(key, thumb)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    files = [p for p in (tmp_path / "thumbs").rglob("*") if p.is_file()]
    assert files == [thumbs.path_of(key)] and webp_size(files[0].read_bytes()) == (THUMB_SIDE, 192)


def decoded(data: bytes) -> KeptSource:
    """The kept source `add` would make of these bytes (the service's real decode, then make_source)."""
    return make_source(decode_image(data, max_bytes=1 << 26, max_pixels=1 << 26))


def turned_jpeg(size: tuple[int, int]) -> bytes:
    """A JPEG of `size` stored pixels whose EXIF says to turn it 90 degrees clockwise for display."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.open(io.BytesIO(photo(11, size=size))).save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


def difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference of two same-sized RGB pictures, 0-255."""
    assert a.size == b.size
    return float(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean())


@pytest.mark.parametrize(
    ("data", "full_size", "kept_size"),
    [
        # 1200 x 800 stored, turned for display: regions refer to 800 x 1200; decoded at half scale, then fitted
        (turned_jpeg((1200, 800)), (800, 1200), (341, 512)),
        (photo(12, size=(2000, 1500), fmt="PNG"), (2000, 1500), (SOURCE_SIDE, 384)),
        (photo(13, size=(90, 60), fmt="PNG"), (90, 60), (90, 60)),  # never enlarged
    ],
    ids=["exif-turned-jpeg", "large-png", "small-png"],
)
def test_kept_source_round_trips_the_original_size(
    tmp_path: Path, data: bytes, full_size: tuple[int, int], kept_size: tuple[int, int]
) -> None:
    """A kept source reads back as the picture that was kept (turned once, not twice) and the original's size."""
    sources = Sources(tmp_path / "sources")
    kept = decoded(data)
    assert kept.full_size == full_size and kept.image.size == kept_size
    sources.write(md5(data), kept)
    back = sources.read(md5(data))
    assert back is not None and back.full_size == full_size and back.image.mode == "RGB"
    # The same picture, within the loss of JPEG (a turned or another picture differs by 40 and more).
    assert back.image.size == kept_size and difference(back.image, kept.image) < 10
    assert sources.path_of(md5(data)) == tmp_path / "sources" / md5(data)[:2] / md5(data)[2] / f"{md5(data)}.jpg"


def test_kept_sources_atomic_shared_and_forgotten_only_when_unused(tmp_path: Path) -> None:
    """Eight writers of one source leave one whole file and no temporary one; forget() removes only unused
    images; an absent or unreadable file reads as None; a failed write is logged, never raised."""
    sources = Sources(tmp_path / "sources")
    a, b = photo(14, size=(900, 700)), photo(15)
    kept_a = decoded(a)
    threads = [threading.Thread(target=sources.write, args=(md5(a), kept_a)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sources.write_many([(md5(b), decoded(b)), (md5(b"none"), None)])
    files = sorted(p.name for p in (tmp_path / "sources").rglob("*") if p.is_file())
    assert files == sorted([f"{md5(a)}.jpg", f"{md5(b)}.jpg"])
    assert (sources.read(md5(a)) or pytest.fail("no source")).full_size == (900, 700)

    assert sources.forget([md5(a), md5(b), "../x"], in_use=lambda md5s: {md5(b)}) == 1
    assert sources.read(md5(a)) is None and sources.read(md5(b)) is not None

    broken, plain = md5(b"broken"), md5(b"plain")
    sources.path_of(broken).parent.mkdir(parents=True)
    sources.path_of(broken).write_bytes(a[: len(a) // 3])  # truncated
    sources.path_of(plain).parent.mkdir(parents=True)
    sources.path_of(plain).write_bytes(photo(16))  # a JPEG, but not one that says the original's size
    assert sources.read(broken) is None and sources.read(plain) is None

    blocked = Sources(tmp_path / "a-file")
    blocked.root.write_bytes(b"")
    blocked.write_many([(md5(a), kept_a)])  # cannot create folders below a file: logged
    assert blocked.root.is_file()


def test_written_with_the_record_shared_and_removed_with_the_last(start_service: Callable[..., LiveService]) -> None:
    """add writes the thumbnail; the same image under two keys shares one file; it goes with its last record."""
    svc = start_service(token=TOKEN)
    image = photo(5, size=(800, 600))
    for key in ("SKU-1", "SKU-2"):
        assert svc.post("add/file", files={"file": ("shoe.jpg", image)}, data={"key": key}).status_code == 200
    thumbs = svc.runtime.deps.thumbs
    path = thumbs.path_of(md5(image))
    assert path.is_file() and len([p for p in thumbs.root.rglob("*") if p.is_file()]) == 1
    [first], [second] = ids_of(svc, "SKU-1"), ids_of(svc, "SKU-2")
    answer = svc.get(f"api/image/sim/thumb/{first}")
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "image/webp"
    assert answer.content == path.read_bytes() and webp_size(answer.content) == (THUMB_SIDE, 192)
    assert "private" in answer.headers["Cache-Control"]
    assert svc.get(f"api/image/sim/thumb/{first}", headers={}).status_code == 401  # the token is required

    assert svc.post("del/key", json={"key": ["SKU-1"]}).json()["data"] == 1
    assert path.is_file()  # SKU-2 still holds the image
    gone = svc.get(f"api/image/sim/thumb/{first}")
    assert gone.status_code == 404 and gone.json()["msg"] == f"no record with id {first}"
    assert svc.post("del/id", json={"id": [second]}).json()["data"] == 1
    assert not path.exists() and svc.get(f"api/image/sim/thumb/{second}").status_code == 404


def test_made_on_first_view_only_from_the_records_own_file(
    start_service: Callable[..., LiveService], tmp_path: Path
) -> None:
    """A record without a thumbnail (stored before) gets one from its filepath below PATH_ROOTS, only if the
    file still holds the same image; otherwise, and for paths outside the roots, 404."""
    svc = start_service(token=TOKEN)
    pool = svc.runtime.settings.image_pool_path
    thumbs = svc.runtime.deps.thumbs
    kept, changed = photo(6), photo(7)
    (pool / "kept.jpg").write_bytes(kept)
    (pool / "changed.jpg").write_bytes(changed)
    for name in ("kept.jpg", "changed.jpg"):
        assert svc.post("add/path", json={"path": str(pool / name), "key": name}).status_code == 200
    outside = svc.post("add/file", files={"file": ("/etc/passwd", photo(8))}, data={"key": "outside"})
    assert outside.status_code == 200
    for image in (kept, changed, photo(8)):  # as if stored before thumbnails existed
        thumbs.path_of(md5(image)).unlink()
    (pool / "changed.jpg").write_bytes(photo(9))  # the file now holds another picture

    [kept_id], [changed_id], [outside_id] = ids_of(svc, "kept.jpg"), ids_of(svc, "changed.jpg"), ids_of(svc, "outside")
    made = svc.get(f"api/image/sim/thumb/{kept_id}")
    assert made.status_code == 200 and made.content == thumbs.path_of(md5(kept)).read_bytes()
    for record_id in (changed_id, outside_id):
        answer = svc.get(f"api/image/sim/thumb/{record_id}")
        assert answer.status_code == 404 and "no thumbnail" in answer.json()["msg"], answer.text
    assert not thumbs.path_of(md5(changed)).exists() and not thumbs.path_of(md5(photo(9))).exists()


def test_re_adding_an_image_restores_its_missing_thumbnail(start_service: Callable[..., LiveService]) -> None:
    """Adding an image that is stored already writes its thumbnail if it has none (no model call needed)."""
    svc = start_service(token=TOKEN)
    image = photo(10)
    assert svc.post("add/file", files={"file": ("a.jpg", image)}, data={"key": "k"}).status_code == 200
    path = svc.runtime.deps.thumbs.path_of(md5(image))
    path.unlink()
    assert svc.post("add/file", files={"file": ("a.jpg", image)}, data={"key": "k"}).status_code == 200
    assert path.is_file()


def kept_files(root: Path) -> dict[str, Path]:
    """The kept sources under SOURCE_DIR, by MD5 (`ab/c/<md5>.jpg`), checking nothing else lies there."""
    files = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
    assert all(p.relative_to(root).parts[:2] == (p.stem[:2], p.stem[2]) and p.suffix == ".jpg" for p in files), files
    return {p.stem: p for p in files}


def test_adds_by_upload_base64_path_and_batch_keep_the_source_until_the_last_record_goes(
    start_service: Callable[..., LiveService],
) -> None:
    """Every way of adding keeps the image's source under SOURCE_DIR, with the original's size; the same image
    under two keys shares one file, which goes with the last record of that MD5."""
    svc = start_service(token=TOKEN)
    pool, root = svc.runtime.settings.image_pool_path, svc.runtime.settings.source_dir
    upload, encoded, on_disk, batched = turned_jpeg((1600, 1200)), photo(21, (700, 500), "PNG"), photo(22), photo(23)
    (pool / "p.jpg").write_bytes(on_disk)
    assert svc.post("add/file", files={"file": ("u.jpg", upload)}, data={"key": "up"}).status_code == 200
    b64 = "data:image/png;base64," + base64.b64encode(encoded).decode()
    assert svc.post("add/base64", json={"base64": b64, "key": "b64"}).status_code == 200
    assert svc.post("add/path", json={"path": str(pool / "p.jpg"), "key": "path"}).status_code == 200
    batch = svc.post("add/batch", json={"items": [{"base64": base64.b64encode(batched).decode(), "key": "batch"}]})
    assert batch.status_code == 200 and batch.json()["data"][0]["code"] == 200, batch.text
    assert svc.post("add/base64", json={"base64": b64, "key": "b64-again"}).status_code == 200

    files = kept_files(root)
    assert set(files) == {md5(upload), md5(encoded), md5(on_disk), md5(batched)}
    sizes = {m: (svc.runtime.deps.sources.read(m) or pytest.fail(f"unreadable {m}")).full_size for m in files}
    assert sizes[md5(upload)] == (1200, 1600) and sizes[md5(encoded)] == (700, 500)  # turned as displayed
    assert Image.open(files[md5(encoded)]).size == (SOURCE_SIDE, 366)

    assert svc.post("del/key", json={"key": ["b64"]}).json()["data"] == 1
    assert files[md5(encoded)].is_file()  # "b64-again" still holds the picture
    assert svc.post("del/key", json={"key": ["b64-again", "up"]}).json()["data"] == 2
    assert set(kept_files(root)) == {md5(on_disk), md5(batched)}


def test_keep_sources_false_keeps_none(start_service: Callable[..., LiveService]) -> None:
    """KEEP_SOURCES=false: adds store records and thumbnails, and nothing under SOURCE_DIR."""
    svc = start_service(token=TOKEN, keep_sources=False)
    image = photo(24)
    (svc.runtime.settings.image_pool_path / "a.jpg").write_bytes(image)
    assert svc.post("add/file", files={"file": ("u.jpg", photo(25))}, data={"key": "up"}).status_code == 200
    assert svc.post("add/path", json={"path": "a.jpg", "key": "path"}).status_code == 200
    assert svc.runtime.deps.thumbs.path_of(md5(image)).is_file() and svc.count() == 2
    assert kept_files(svc.runtime.settings.source_dir) == {}


def test_the_kept_source_is_the_one_the_re_embedding_benchmark_chose() -> None:
    """The format, side and quality imgsim writes are the ones `make bench` measured and chose (bench.reembed):
    changing them without re-running the benchmark would leave the docs' disk cost and quality loss untrue."""
    decision = json.loads((Path(__file__).parent.parent / "docs/data/bench/reembed.json").read_text())["decision"]
    chosen = (decision["source_format"], decision["source_side"], decision["source_quality"])
    assert chosen == (thumbs.SOURCE_FORMAT, thumbs.SOURCE_SIDE, thumbs.SOURCE_QUALITY)
