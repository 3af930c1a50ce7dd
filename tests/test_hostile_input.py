"""Hostile and malformed input over real HTTP: each gets the right status code and a message saying
what was wrong, and the server keeps serving (a /health and a normal add afterwards).

Status codes: 400 bad field, 413 too large, 415 not an image; the envelope's `code` equals the
HTTP status. Counts of the inputs tried go to results/tests/hostile_counts.json (git-ignored).
"""

from __future__ import annotations

import base64
import io
import json
import re
import resource
import socket
import struct
import time
import zlib
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import requests
from PIL import Image, ImageOps

from tests import hostile_counts
from tests.conftest import LiveService, photo
from tests.procs import wait_until

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="session", autouse=True)
def _write_counts() -> Iterator[None]:
    yield
    hostile_counts.write()


# --- helpers -------------------------------------------------------------------------------------
def expect(resp: requests.Response, code: int, *words: str) -> dict:
    """The answer has HTTP status `code`, the envelope says the same, data is null, msg names `words`."""
    body = resp.json()
    assert resp.status_code == code and body["code"] == code, (resp.status_code, body)
    assert body["data"] is None, body
    for word in words:
        assert word.lower() in body["msg"].lower(), (word, body["msg"])
    assert "Traceback" not in body["msg"] and "internal error" not in body["msg"]
    return body


def not_an_image(resp: requests.Response) -> None:
    """415, saying the bytes are no image (or a broken one, when they start like one)."""
    msg = expect(resp, 415)["msg"]
    assert any(words in msg for words in ("not a decodable image", "truncated or corrupt", "is not supported")), msg


def ok(resp: requests.Response) -> dict:
    body = resp.json()
    assert resp.status_code == 200 and body["code"] == 200 and body["msg"] == "success", body
    return body


def still_serving(svc: LiveService, seed: int) -> None:
    """The server answers /health and still adds a normal image."""
    assert svc.get("health").json()["data"] == {"status": "alive"}
    assert (
        ok(
            svc.post(
                "add/file",
                files={"file": ("ok.jpg", photo(seed, size=(64, 48)))},
                data={"key": f"still-serving-{seed}"},
            )
        )["data"]
        is True
    )


def upload(svc: LiveService, data: bytes, name: str = "x.jpg", endpoint: str = "add/file", **form: str):
    return svc.post(endpoint, files={"file": (name, data)}, data=form)


def post_raw(svc: LiveService, endpoint: str, raw: bytes | str, content_type: str = "application/json"):
    return svc.post(
        endpoint, data=raw.encode("utf-8") if isinstance(raw, str) else raw, headers={"Content-Type": content_type}
    )


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_from_rows(width: int, height: int, bit_depth: int, color_type: int, rows: Iterator[bytes]) -> bytes:
    """A PNG built chunk by chunk, streaming the rows through zlib (nothing the size of the image is held)."""
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(b"\x00" + row) for row in rows) + comp.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0))
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def with_png_chunk(png: bytes, kind: bytes, data: bytes) -> bytes:
    """`png` with an extra chunk right after IHDR."""
    return png[:33] + png_chunk(kind, data) + png[33:]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- 1. non-images, truncated and corrupt images ------------------------------------------------
NOT_IMAGES = {
    "notes.jpg": b"just some text, not a picture\n" * 20,
    "page.png": b"<!doctype html><html><body><img src=x></body></html>",
    "doc.jpg": b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
    "archive.gif": b"PK\x03\x04" + bytes(200),
    "program.webp": b"\x7fELF\x02\x01\x01" + bytes(300),
    "noise.bmp": np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    "data.tiff": json.dumps({"not": "an image"}).encode(),
    "vector.png": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>',
    "fake-gif.jpg": b"GIF89a but not really",
    "fake-png.png": b"\x89PNG\r\n\x1a\n" + b"garbage" * 50,
    "fake-jpeg.jpg": b"\xff\xd8\xff\xe0" + b"garbage" * 50,
    "ps.jpg": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
}
UNSUPPORTED = {  # real images in formats the service does not take
    "icon.jpg": ("ICO", {}),
    "pixmap.png": ("PPM", {}),
    "old.jpg": ("PCX", {}),
    "targa.png": ("TGA", {}),
}


def test_non_image_bytes_with_image_names_are_415(lite_service: LiveService) -> None:
    svc = lite_service
    for name, data in NOT_IMAGES.items():
        for endpoint in ("add/file", "search/file"):
            not_an_image(upload(svc, data, name, endpoint))
            hostile_counts.tried("non_image_bytes")
    small = Image.open(io.BytesIO(photo(3, size=(64, 48))))
    for name, (fmt, params) in UNSUPPORTED.items():
        expect(upload(svc, encode(small, fmt, **params), name), 415, f"format {fmt}", "not supported")
        hostile_counts.tried("non_image_bytes")
    not_an_image(svc.post("add/base64", json={"base64": b64(NOT_IMAGES["page.png"])}))
    hostile_counts.tried("non_image_bytes")
    assert svc.count() == 0
    still_serving(svc, 100)


def test_truncated_and_corrupt_images_are_415(lite_service: LiveService) -> None:
    svc = lite_service
    jpeg, png = photo(4), photo(4, fmt="PNG")
    gif = photo(4, fmt="GIF")
    cases: dict[str, bytes] = {}
    for frac in (0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99):
        cases[f"jpeg cut at {frac}"] = jpeg[: int(len(jpeg) * frac)]
        cases[f"png cut at {frac}"] = png[: int(len(png) * frac)]
        cases[f"gif cut at {frac}"] = gif[: int(len(gif) * frac)]
    cases["jpeg without its end marker"] = jpeg[:-2]
    cases["jpeg header only"] = jpeg[:20]
    cases["png signature only"] = png[:8]
    cases["png header only"] = png[:33]
    bad_crc = bytearray(png)
    bad_crc[20] ^= 0xFF  # inside IHDR: its CRC no longer matches
    cases["png with a bad header crc"] = bytes(bad_crc)
    idat_at = png.index(b"IDAT") - 4
    idat_len = struct.unpack(">I", png[idat_at : idat_at + 4])[0]
    garbage = bytes(range(256)) * (idat_len // 256 + 1)
    cases["png with a corrupt zlib stream"] = (
        png[:idat_at] + png_chunk(b"IDAT", garbage[:idat_len]) + png[idat_at + 12 + idat_len :]
    )
    smeared = bytearray(jpeg)
    smeared[len(jpeg) // 3 : len(jpeg) // 3 + 200] = b"\xff" * 200
    cases["jpeg with a run of 0xff markers"] = bytes(smeared)
    for label, data in cases.items():
        not_an_image(upload(svc, data, "broken.jpg"))
        hostile_counts.tried("truncated_or_corrupt")
    # A PNG that lacks only its IEND trailer has every pixel: it is a valid picture (decision: 200).
    ok(upload(svc, png[:-12], "no-iend.png", key="no-iend"))
    hostile_counts.tried("truncated_or_corrupt")
    assert svc.count() == 1
    still_serving(svc, 101)


# --- 2. sizes: tiny, extreme aspect, decompression bombs ----------------------------------------
def test_tiny_and_extreme_aspect_images_are_valid(lite_service: LiveService) -> None:
    svc = lite_service
    one = Image.new("RGB", (1, 1), (200, 30, 30))
    images = {
        "1x1.png": encode(one, "PNG"),
        "1x1.jpg": encode(one, "JPEG"),
        "1x1.gif": encode(one, "GIF"),
        "1x1.bmp": encode(one, "BMP"),
        "1x1.webp": encode(one, "WEBP"),
        "1x1.tiff": encode(one, "TIFF"),
        "1x1-gray.png": encode(Image.new("L", (1, 1), 7), "PNG"),
        "1x1-alpha.png": encode(Image.new("RGBA", (1, 1), (1, 2, 3, 0)), "PNG"),
        "1x3000.png": encode(Image.new("RGB", (1, 3000), (0, 90, 0)), "PNG"),
        "3000x1.png": encode(Image.new("RGB", (3000, 1), (0, 0, 90)), "PNG"),
    }
    for name, data in images.items():
        ok(upload(svc, data, name, key=name))
        hostile_counts.tried("tiny_images")
    hits = ok(svc.post("search/file", files={"file": ("q.png", images["1x1.png"])}, data={"limit": "3"}))["data"]
    assert hits[0]["key"] == "1x1.png" and hits[0]["score"] > 0.9999
    still_serving(svc, 102)


def bomb_png(side: int) -> bytes:
    """A valid 1-bit PNG of side x side pixels, all black: ~110 KB on disk for 30000 x 30000."""
    row = bytes((side + 7) // 8)
    return png_from_rows(side, side, 1, 0, (row for _ in range(side)))


def patched(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    return data[:offset] + struct.pack(fmt, *values) + data[offset + struct.calcsize(fmt) :]


def test_decompression_bombs_are_413_without_being_decoded(start_service: Callable[..., LiveService]) -> None:
    svc = start_service()
    small = Image.open(io.BytesIO(photo(5, size=(64, 48))))
    jpeg = encode(small, "JPEG")
    sof = jpeg.index(b"\xff\xc0")
    bmp = encode(small, "BMP")
    gif = encode(small, "GIF")
    png = encode(small, "PNG")
    bombs = {
        "30000x30000 png of one colour": (bomb_png(30000), "30000x30000"),
        "jpeg whose frame header says 30000x30000": (patched(jpeg, sof + 5, ">HH", 30000, 30000), "30000x30000"),
        "bmp whose header says 30000x30000": (patched(bmp, 18, "<ii", 30000, 30000), "30000x30000"),
        "gif whose screen is 30000x30000": (patched(gif, 6, "<HH", 30000, 30000), "30000x30000"),
        "png whose header says 65535x65535": (
            png[:8] + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 65535, 65535, 8, 2, 0, 0, 0)) + png[33:],
            "65535x65535",
        ),
        "png with a 100 MB zTXt chunk": (
            with_png_chunk(png, b"zTXt", b"k\x00\x00" + zlib.compress(bytes(10**8), 9)),
            "metadata",
        ),
        "png with a 100 MB iCCP profile": (
            with_png_chunk(png, b"iCCP", b"p\x00\x00" + zlib.compress(bytes(10**8), 9)),
            "metadata",
        ),
    }
    for data, _ in bombs.values():
        assert len(data) < 200_000  # small on the wire
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    for label, (data, words) in bombs.items():
        started = time.monotonic()
        for endpoint in ("add/file", "search/file"):
            body = expect(upload(svc, data, "bomb.png", endpoint), 413, words)
            assert "MAX_IMAGE_PIXELS" in body["msg"] or "metadata" in body["msg"], (label, body)
            hostile_counts.tried("decompression_bombs")
        assert time.monotonic() - started < 10, label
        b64_answer = svc.post("add/base64", json={"base64": b64(data)})
        expect(b64_answer, 413, words)
        hostile_counts.tried("decompression_bombs")
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    # Decoding the 30000x30000 bomb would need 900 MB (one byte a pixel) before the RGB copy.
    assert grown_mib < 300, f"peak memory grew by {grown_mib:.0f} MiB: a bomb was decoded"
    assert svc.count() == 0
    still_serving(svc, 103)


# --- 3. unusual but valid images ----------------------------------------------------------------
def lossless(img: Image.Image) -> bytes:
    return encode(img.convert("RGB"), "PNG")


def only_near_identical(svc: LiveService, query: bytes, name: str = "q.png") -> list[str]:
    """Keys of the stored images the query is pixel-identical to (cosine >= 0.9999)."""
    hits = ok(svc.post("search/file", files={"file": (name, query)}, data={"min_score": "0.9999"}))["data"]
    return [h["key"] for h in hits]


def test_animated_gif_uses_its_first_frame(lite_service: LiveService) -> None:
    svc = lite_service
    frames = [Image.open(io.BytesIO(photo(seed))).convert("RGB") for seed in (71, 72, 73)]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    anim = Image.open(io.BytesIO(gif))
    assert getattr(anim, "n_frames", 1) == 3
    for index in range(3):
        anim.seek(index)
        ok(upload(svc, lossless(anim), f"frame{index}.png", key=f"frame{index}"))
    assert only_near_identical(svc, gif, "anim.gif") == ["frame0"]
    assert only_near_identical(svc, _frame(gif, 1)) == ["frame1"]
    ok(upload(svc, gif, "anim.gif", key="animated"))
    hostile_counts.tried("animated_gif", 2)
    webp = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=80, lossless=True)
    ok(upload(svc, webp, "anim.webp", key="animated-webp"))
    hostile_counts.tried("animated_gif")
    still_serving(svc, 104)


def _frame(gif: bytes, index: int) -> bytes:
    img = Image.open(io.BytesIO(gif))
    img.seek(index)
    return lossless(img)


def test_16_bit_png_and_cmyk_jpeg_decode_to_the_right_pixels(lite_service: LiveService) -> None:
    svc = lite_service
    # 16-bit grayscale: a gradient over the full 0..65535 range. Clipping at 255 (Pillow's plain
    # convert) would give an almost white picture; the service rescales to 8 bits instead.
    yy, xx = np.mgrid[0:120, 0:160]
    gray16 = ((xx * 400 + yy * 50) % 65536).astype(np.uint16)
    png16 = png_from_rows(160, 120, 16, 0, (gray16[y].astype(">u2").tobytes() for y in range(120)))
    gray8 = (gray16.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    ok(upload(svc, encode(Image.fromarray(gray8, "L"), "PNG"), "gray8.png", key="gray8"))
    ok(upload(svc, encode(Image.new("L", (160, 120), 255), "PNG"), "white.png", key="white"))
    assert only_near_identical(svc, png16, "gray16.png") == ["gray8"]
    # 16-bit RGB whose high bytes are an 8-bit photo: decodes to that photo.
    rgb8 = np.asarray(Image.open(io.BytesIO(photo(9, size=(96, 64)))).convert("RGB"))
    rgb16 = rgb8.astype(np.uint16) * 257
    png48 = png_from_rows(96, 64, 16, 2, (rgb16[y].astype(">u2").tobytes() for y in range(64)))
    ok(upload(svc, encode(Image.fromarray(rgb8, "RGB"), "PNG"), "rgb8.png", key="rgb8"))
    assert only_near_identical(svc, png48, "rgb48.png") == ["rgb8"]
    # 16-bit grayscale with alpha (color type 4) and a 16-bit TIFF.
    rows = (np.stack([gray16[y], np.full(160, 65535, np.uint16)], axis=-1).astype(">u2").tobytes() for y in range(120))
    ok(upload(svc, png_from_rows(160, 120, 16, 4, rows), "gray-alpha16.png", key="ga16"))
    ok(
        upload(
            svc, encode(Image.fromarray(gray16.astype(np.int32), "I").convert("I;16"), "TIFF"), "g.tiff", key="tiff16"
        )
    )
    # CMYK JPEG (Photoshop writes these), a palette PNG with transparency, LA, and a 1-bit image.
    base = Image.open(io.BytesIO(photo(10)))
    ok(upload(svc, encode(base.convert("CMYK"), "JPEG"), "cmyk.jpg", key="cmyk"))
    ok(upload(svc, encode(base.convert("P"), "PNG", transparency=0), "p.png", key="palette"))
    ok(upload(svc, encode(base.convert("LA"), "PNG"), "la.png", key="la"))
    ok(upload(svc, encode(base.convert("1"), "PNG"), "bw.png", key="bw"))
    hostile_counts.tried("high_bit_depth_and_cmyk", 9)
    still_serving(svc, 105)


def test_huge_and_broken_metadata(lite_service: LiveService) -> None:
    svc = lite_service
    img = Image.open(io.BytesIO(photo(12)))
    jpeg = photo(12)
    exif = img.getexif()
    exif[0x0112] = 6  # orientation: rotate for display
    exif[0x010E] = "x" * 60000  # ImageDescription: the APP1 segment is near its 64 KB maximum
    rotated = encode(img, "JPEG", exif=exif.tobytes(), quality=95)
    upright = lossless(ImageOps.exif_transpose(Image.open(io.BytesIO(rotated))))
    ok(upload(svc, upright, "upright.png", key="upright"))
    assert only_near_identical(svc, rotated, "rotated.jpg") == ["upright"]  # orientation applied
    bogus = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05" + b"\xff" * 5000  # IFD offsets point nowhere
    odd_orientation = img.getexif()
    odd_orientation[0x0112] = 99
    many_app1 = (b"\xff\xe1" + struct.pack(">H", 65535) + b"Exif\x00\x00" + bytes(65527)) * 100
    png = photo(12, fmt="PNG")
    cases = {
        "60 KB EXIF, rotated": rotated,
        "EXIF with offsets past the end": jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(bogus) + 2) + bogus + jpeg[2:],
        "orientation 99": encode(img, "JPEG", exif=odd_orientation.tobytes()),
        "100 APP1 segments of 64 KB": jpeg[:2] + many_app1 + jpeg[2:],
        "5 MB comment": jpeg[:2] + (b"\xff\xfe" + struct.pack(">H", 65535) + bytes(65533)) * 80 + jpeg[2:],
        "png with a 5 MB tEXt chunk": with_png_chunk(png, b"tEXt", b"comment\x00" + b"a" * 5_000_000),
        "png with a 9 MB eXIf chunk": with_png_chunk(png, b"eXIf", b"MM\x00*" + bytes(9_000_000)),
    }
    for index, data in enumerate(cases.values()):
        ok(upload(svc, data, "meta.jpg", key=f"meta-{index}"))
        hostile_counts.tried("huge_or_broken_metadata")
    still_serving(svc, 106)


# --- 4. request shape: missing file, content types, JSON ----------------------------------------
def test_empty_file_and_multipart_without_file(lite_service: LiveService) -> None:
    svc = lite_service
    for endpoint in ("add/file", "search/file"):
        expect(upload(svc, b"", "empty.jpg", endpoint), 415, "empty", "0 bytes")
        expect(svc.post(endpoint, files={"image": ("a.jpg", photo(1))}), 400, "'file' is required")
        expect(svc.post(endpoint, data={"key": "no-file"}), 400, "'file' is required")
        expect(svc.post(endpoint, files={"file": ("", b"")}), 415, "empty")  # curl -F file=@/dev/null
        expect(svc.post(endpoint, files={"file": (None, "abc")}), 400, "'file' is required")  # a text field
        expect(svc.post(endpoint, json={"file": b64(photo(1))}), 400, "'file' is required")
        expect(post_raw(svc, endpoint, photo(1), "image/jpeg"), 400, "multipart/form-data")
        expect(
            post_raw(
                svc, endpoint, b'--x\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc', "multipart/form-data"
            ),
            400,
            "multipart",
        )
        latin1 = (
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="caf\xe9.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n" + photo(1) + b"\r\n--b--\r\n"
        )
        expect(
            post_raw(svc, endpoint, latin1, "multipart/form-data; boundary=b"), 400, "could not be parsed", "not UTF-8"
        )
        expect(post_raw(svc, endpoint, b"", "multipart/form-data; boundary=b"), 400, "'file' is required")
        hostile_counts.tried("empty_or_missing_file", 10)
    # The same image in the right shape works, even with a UTF-8 non-ASCII file name.
    ok(svc.post("add/file", files={"file": ("café ☕.jpg", photo(1))}, data={"key": "cafe"}))
    [record] = ok(svc.post("get/key", json={"key": "cafe"}))["data"]
    assert record["filepath"] == "café ☕.jpg"
    still_serving(svc, 107)


def test_wrong_content_type_and_invalid_json(lite_service: LiveService) -> None:
    svc = lite_service
    image = b64(photo(2, size=(64, 48)))
    # JSON labelled text/plain or form-urlencoded (`curl -d`) is still read as JSON: lenient by design.
    ok(post_raw(svc, "add/base64", json.dumps({"base64": image, "key": "plain"}), "text/plain"))
    ok(post_raw(svc, "add/base64", json.dumps({"base64": image, "key": "curl-d"}), "application/x-www-form-urlencoded"))
    assert {r["key"] for r in ok(svc.post("get/key", json={"key": "plain,curl-d"}))["data"]} == {"plain", "curl-d"}
    hostile_counts.tried("wrong_content_type", 2)
    wrong_type = {
        "xml": (b"<add><base64>aGk=</base64></add>", "application/xml"),
        "yaml": (b"base64: aGk=\nkey: a\n", "application/yaml"),
        "binary": (photo(2), "application/octet-stream"),
    }
    for raw, ctype in wrong_type.values():
        for endpoint in ("add/base64", "get/key", "del/id"):
            expect(post_raw(svc, endpoint, raw, ctype), 400, "not valid JSON")
            hostile_counts.tried("wrong_content_type")
    invalid = [
        "{",
        '{"key": }',
        "{'key': 'a'}",
        '{"key": "a",}',
        '{"key": "a"} trailing',
        '{"key": "a\\x"}',
        '{"key": "unterminated}',
        "key=a&b",
        '\ufeff{"key": "a"',
        '{"key": 01}',
    ]
    for raw in invalid:
        for endpoint in ("get/key", "del/key", "del/id", "search/base64", "add/url", "add/path"):
            expect(post_raw(svc, endpoint, raw), 400, "not valid JSON")
            hostile_counts.tried("invalid_json")
    expect(post_raw(svc, "get/key", b'{"key": "\xff\xfe"}'), 400, "not valid JSON")  # not UTF-8
    for raw in ("[1, 2]", '"key"', "123", "true"):
        expect(post_raw(svc, "get/key", raw), 400, "JSON object")
    expect(post_raw(svc, "get/key", "null"), 400, "JSON")
    deep = "[" * 100_000 + "]" * 100_000
    for raw in (deep, '{"key": ' + deep + "}", '{"a":' * 50_000 + "1" + "}" * 50_000):
        expect(post_raw(svc, "get/key", raw), 400, "nested too deeply")
    hostile_counts.tried("invalid_json", 9)
    still_serving(svc, 108)


def test_form_field_flood_is_413_with_a_clear_message(lite_service: LiveService) -> None:
    svc = lite_service
    flood = {f"f{i}": (None, "x") for i in range(1500)}
    expect(svc.post("add/file", files=flood), 413, "more than 1000 fields")
    expect(svc.post("search/file", files={**flood, "file": ("a.jpg", photo(1))}), 413, "more than 1000 fields")
    # A urlencoded form has no part limit; it is bounded by the body size, and the fields are ignored.
    expect(svc.post("get/key", data={f"f{i}": "x" for i in range(1500)}), 400, "'key' is required")
    hostile_counts.tried("form_field_flood", 3)
    still_serving(svc, 109)


# --- 5. wrong types and out-of-range values -----------------------------------------------------
def test_json_fields_of_the_wrong_type_are_400_naming_the_field(lite_service: LiveService) -> None:
    svc = lite_service
    image = b64(photo(3, size=(64, 48)))
    ok(svc.post("add/base64", json={"base64": image, "key": "target"}))
    cases: list[tuple[str, dict, str]] = []
    for limit in ("abc", -1, 0, 10**9, 101, 1.5, "1.5", True, [], {}, "1e3", "0x10", "", None, "-3", 10**40):
        if limit in ("", None):
            continue  # absent: the default of 10 applies
        cases.append(("search/base64", {"base64": image, "limit": limit}, "'limit'"))
    for score in ("abc", 2, -2, "nan", "NaN", "inf", "-inf", 10**400, True, [0.5], {"x": 1}, "1e999"):
        cases.append(("search/base64", {"base64": image, "min_score": score}, "'min_score'"))
    for key in ({"a": 1}, [1, 2], True, False, 1.5, [None]):
        cases.append(("add/base64", {"base64": image, "key": key}, "'key'"))
    for key in ({"a": 1}, True, 1.5, [{"a": 1}], [None], [True], [[]], ["ok", 2.5]):
        cases.append(("get/key", {"key": key}, "'key"))
        cases.append(("del/key", {"key": key}, "'key"))
    for ident in (
        ["a"],
        [1.5],
        [True],
        [None],
        [[1]],
        "1,a",
        -1,
        0,
        2**53,
        [2**53],
        "9007199254740992",
        {},
        1.0,
        "1.0",
        "0x1",
        ["1e3"],
        [-5],
        "",
        [],
        True,
        "1;2",
        ["x"],
    ):
        cases.append(("del/id", {"id": ident}, "'id'"))
    for field, endpoint in (
        ("imgPath", "add/base64"),
        ("url", "add/url"),
        ("url", "search/url"),
        ("path", "add/path"),
        ("path", "search/path"),
        ("base64", "add/base64"),
        ("base64", "search/base64"),
    ):
        for value in (123, ["x"], {"x": "y"}, True, 1.5):
            body = {"base64": image, field: value} if field == "imgPath" else {field: value}
            cases.append((endpoint, body, f"'{field}'"))
    for endpoint, body, field in cases:
        expect(svc.post(endpoint, json=body), 400, field)
        hostile_counts.tried("wrong_field_types")
    # Digit strings are numbers (multipart sends every field as text).
    assert len(ok(svc.post("search/base64", json={"base64": image, "limit": " 5 "}))["data"]) == 1
    assert ok(svc.post("search/base64", json={"base64": image, "min_score": "-1"}))["data"][0]["key"] == "target"
    assert ok(svc.post("del/id", json={"id": "12345, 678"}))["data"] == 0
    assert svc.count() == 1
    still_serving(svc, 110)


# --- 6. keys: unicode, long, NUL and control characters -----------------------------------------
UNICODE_KEYS = [
    "商品-😀",
    "Ωmega-ß",
    "caf\u00e9",
    "cafe\u0301",
    "مرحبا",
    "👨\u200d👩\u200d👧",
    "ｆｕｌｌ",
    "a\u00a0b",
    "\u202eevil",
    "x" * 512,
    "😀" * 512,
    "𝕏" * 300 + "é" * 212,
]


def test_unicode_and_long_keys(lite_service: LiveService) -> None:
    svc = lite_service
    image = b64(photo(13, size=(64, 48)))
    for key in UNICODE_KEYS:
        ok(svc.post("add/base64", json={"base64": image, "key": key}))
        hostile_counts.tried("unicode_and_long_keys")
    for key in UNICODE_KEYS:  # every key comes back exactly (NFC and NFD are different keys)
        [record] = ok(svc.post("get/key", json={"key": [key]}))["data"]
        assert record["key"] == key
    form_key = "ключ-🔑"
    ok(svc.post("add/file", files={"file": ("k.jpg", photo(14, size=(64, 48)))}, data={"key": form_key}))
    assert [r["key"] for r in ok(svc.post("get/key", data={"key": form_key}))["data"]] == [form_key]
    too_long = ["x" * 513, "😀" * 513, "k" * 10_240, "é" * 10_240]
    for key in too_long:
        expect(svc.post("add/base64", json={"base64": image, "key": key}), 400, "'key'", "at most 512")
        expect(svc.post("get/key", json={"key": [key]}), 400, "at most 512")
        expect(svc.post("del/key", json={"key": key}), 400, "at most 512")
        hostile_counts.tried("unicode_and_long_keys", 3)
    for raw in ('{"key": "\\ud800"}', '{"key": ["a", "\\udfff"]}'):
        expect(post_raw(svc, "get/key", raw), 400, "surrogate")
        expect(post_raw(svc, "del/key", raw), 400, "surrogate")
        hostile_counts.tried("unicode_and_long_keys", 2)
    for field in ("imgPath", "key"):
        raw = '{"base64": "%s", "%s": "x\\ud800y"}' % (image, field)
        expect(post_raw(svc, "add/base64", raw), 400, f"'{field}'", "surrogate")
    expect(post_raw(svc, "add/path", '{"path": "\\ud800.jpg"}'), 400, "'path'", "surrogate")
    expect(post_raw(svc, "add/url", '{"url": "http://127.0.0.1/\\ud800"}'), 400, "'url'", "surrogate")
    hostile_counts.tried("unicode_and_long_keys", 4)
    assert svc.count() == len(UNICODE_KEYS) + 1
    still_serving(svc, 111)


def test_nul_bytes_and_control_characters_in_fields(lite_service: LiveService) -> None:
    svc = lite_service
    image = b64(photo(15, size=(64, 48)))
    for key in ("a\x00b", "\x00", "a\tb", "line\nbreak", "c\rr", "\x1b[31mred", "del\x7f", "\x08back"):
        expect(svc.post("add/base64", json={"base64": image, "key": key}), 400, "'key'")
        expect(svc.post("get/key", json={"key": [key]}), 400, "'key")
        expect(svc.post("del/key", json={"key": key}), 400, "'key'")
        expect(
            svc.post("add/file", files={"file": ("a.jpg", photo(15, size=(64, 48)))}, data={"key": key}), 400, "'key'"
        )
        hostile_counts.tried("nul_and_control_chars", 4)
    for endpoint, body, field in (
        ("add/base64", {"base64": image, "imgPath": "/x\x00.jpg"}, "'imgPath'"),
        ("add/url", {"url": "http://127.0.0.1/a\x00.jpg"}, "'url'"),
        ("search/url", {"url": "http://127.0.0.1/\x00"}, "'url'"),
        ("add/path", {"path": "a\x00.jpg"}, "'path'"),
        ("search/path", {"path": "\x00"}, "'path'"),
        ("add/base64", {"base64": image[:40] + "\x00" + image[40:]}, "'base64'"),
        ("del/id", {"id": "1\x002"}, "'id'"),
        ("search/base64", {"base64": image, "limit": "1\x00"}, "'limit'"),
    ):
        expect(svc.post(endpoint, json=body), 400, field)
        hostile_counts.tried("nul_and_control_chars")
    assert svc.count() == 0
    still_serving(svc, 112)


# --- 7. base64 ----------------------------------------------------------------------------------
def test_base64_invalid_non_image_and_over_the_cap(start_service: Callable[..., LiveService]) -> None:
    svc = start_service(max_image_bytes=20_000)
    small = photo(16, size=(64, 48))
    for value in (
        "!!!!",
        "a",
        "abc$def",
        "ÿÿÿÿ",
        "====",
        "aGk=aGk=" + "=" * 7,
        "data:image/png;base64,@@@",
        "a-b_c+d/e",
        "\u0660\u0661\u0662\u0663",
    ):
        for endpoint in ("add/base64", "search/base64"):
            expect(svc.post(endpoint, json={"base64": value}), 400, "'base64'", "not valid base64")
            hostile_counts.tried("base64")
    for value in (b64(b"hello, world"), b64(b"\x00" * 100), "data:text/plain;base64," + b64(b"plain text"), "aGk"):
        expect(svc.post("add/base64", json={"base64": value}), 415)
        hostile_counts.tried("base64")
    for endpoint in ("add/base64", "search/base64"):
        expect(svc.post(endpoint, json={}), 400, "'base64' is required")
        expect(svc.post(endpoint, json={"base64": ""}), 400, "'base64' is required")
        hostile_counts.tried("base64", 2)
    # Over MAX_IMAGE_BYTES but under the body cap: the decoded size is checked (413 from the field)...
    over = b64(bytes(30_000))
    expect(svc.post("add/base64", json={"base64": over}), 413, "MAX_IMAGE_BYTES")
    expect(svc.post("search/base64", json={"base64": "data:image/jpeg;base64," + over}), 413, "MAX_IMAGE_BYTES")
    # ... and a body over the request cap is refused before it is parsed, still as the JSON envelope.
    huge = b64(bytes(200_000))
    expect(svc.post("add/base64", json={"base64": huge}), 413, "MAX_IMAGE_BYTES")
    expect(svc.post("add/file", files={"file": ("big.jpg", bytes(200_000))}), 413, "MAX_IMAGE_BYTES")
    expect(svc.post("add/file", files={"file": ("big.jpg", bytes(20_001))}), 413, "MAX_IMAGE_BYTES")
    hostile_counts.tried("base64", 5)
    # The accepted spellings of a small image: standard, URL-safe, unpadded, wrapped, data URL.
    standard = b64(small)
    spellings = [
        standard,
        base64.urlsafe_b64encode(small).decode().rstrip("="),
        "\n".join(standard[i : i + 76] for i in range(0, len(standard), 76)),
        "data:image/jpeg;base64," + standard,
        "  " + standard + "\r\n",
    ]
    for spelling in spellings:
        ok(svc.post("add/base64", json={"base64": spelling, "key": "same"}))
    assert svc.count() == 1  # one image, one key: every spelling decoded to the same bytes
    still_serving(svc, 113)


# --- 8. filter-expression injection through keys (Milvus Lite and the server) -------------------
INJECTION_KEYS = [
    '"',
    "'",
    "\\",
    "\\\\",
    '\\"',
    '"\\',
    "x\\",
    '" or 1==1 or key == "',
    "' or 1==1 --",
    '" or 1==1',
    'key in ["x"]',
    'x" || key != "',
    '") or (id > 0',
    'a"] or key in ["b',
    "%",
    "_",
    "*",
    "x%",
    "like",
    'key like "%"',
    "\\u0022",
    "\\n",
    "${key}",
    "id > 0",
    '"" == ""',
    "'; drop collection image_sim; --",
    'ok"key',
    'ok\\"key',
    '\\\\"',
    '"]',
    "[",
    "]",
    "(",
    ",",
    "x,y",
    "true",
    "null",
]


def test_filter_injection_keys_are_plain_strings(service: LiveService) -> None:
    svc = service
    image = b64(photo(17, size=(64, 48)))
    assert len(set(INJECTION_KEYS)) == len(INJECTION_KEYS)
    bystanders = ["x", "b", "ok", "key", "1"]
    for key in bystanders:
        ok(svc.post("add/base64", json={"base64": image, "key": key}))
    for key in INJECTION_KEYS:
        ok(svc.post("add/base64", json={"base64": image, "key": key}))
        hostile_counts.tried("filter_injection_keys")
    total = len(INJECTION_KEYS) + len(bystanders)
    assert svc.count() == total
    for key in INJECTION_KEYS:  # get returns exactly that key's record
        records = ok(svc.post("get/key", json={"key": [key]}))["data"]
        assert [r["key"] for r in records] == [key], (key, records)
        hostile_counts.tried("filter_injection_keys")
    together = ok(svc.post("get/key", json={"key": INJECTION_KEYS}))["data"]
    assert sorted(r["key"] for r in together) == sorted(INJECTION_KEYS)
    assert ok(svc.post("get/key", json={"key": ['nope" or key != "']}))["data"] == []
    assert ok(svc.post("del/key", json={"key": ['nope" or key != "', "zz\\"]}))["data"] == 0
    assert svc.count() == total
    remaining = total
    for key in INJECTION_KEYS:  # delete removes only that key's record
        assert ok(svc.post("del/key", json={"key": [key]}))["data"] == 1, key
        remaining -= 1
        assert svc.count() == remaining, key
        assert ok(svc.post("get/key", json={"key": [key]}))["data"] == []
        hostile_counts.tried("filter_injection_keys")
    survivors = ok(svc.post("get/key", json={"key": bystanders}))["data"]
    assert sorted(r["key"] for r in survivors) == sorted(bystanders)
    still_serving(svc, 114)


# --- 9. thumbnails and request ids --------------------------------------------------------------
# Path segments that are not record ids: 400 naming the value; nothing is looked up.
NOT_IDS = [
    "0",
    "-1",
    "abc",
    "1.5",
    "1e3",
    "9" * 17,
    str(2**53),
    "0x10",
    "%00",
    "%0a1",
    "1%00",
    "%C3%BF",
    "NaN",
    "true",
    "null",
    "[1]",
    "1,2",
    "%2e%2e",
    "'1'",
    "1;drop",
]


def test_thumb_endpoint_refuses_what_is_not_an_id(start_service: Callable[..., LiveService]) -> None:
    svc = start_service(token="hostile-thumb-token")
    ok(svc.post("add/file", files={"file": ("a.jpg", photo(18, size=(64, 48)))}, data={"key": "k"}))
    [record] = ok(svc.post("get/key", json={"key": ["k"]}))["data"]
    for raw in NOT_IDS:
        expect(svc.get(f"api/image/sim/thumb/{raw}"), 400, "not an id")
        hostile_counts.tried("thumb_ids")
    for missing in ("1", str(2**53 - 1), str(record["id"] + 1)):  # ids, but of no record: 404, the same message
        expect(svc.get(f"api/image/sim/thumb/{missing}"), 404, f"no record with id {int(missing)}")
        hostile_counts.tried("thumb_ids")
    for sneaky in ("..%2f..%2fetc%2fpasswd", "1/..", "%2fetc%2fpasswd", ""):  # a slash is no id: no route
        expect(svc.get(f"api/image/sim/thumb/{sneaky}"), 404, "no such endpoint")
        hostile_counts.tried("thumb_ids")
    for headers in ({}, {"token": "wrong"}, {"Authorization": "Bearer hostile-thumb-token-but-longer"}):
        expect(svc.get(f"api/image/sim/thumb/{record['id']}", headers=headers), 401, "token")
        hostile_counts.tried("thumb_ids")
    assert svc.get(f"api/image/sim/thumb/{record['id']}").headers["Content-Type"] == "image/webp"
    expect(svc.post(f"api/image/sim/thumb/{record['id']}".removeprefix("api/image/sim/")), 405, "not allowed")
    still_serving(svc, 118)


def raw_get(svc: LiveService, header_value: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    """GET /health with an X-Request-Id header of these exact bytes; the status line and the headers of the answer."""
    port = int(svc.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: " + header_value + b"\r\nConnection: close\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    return head[0], {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in head[1:])}


def test_request_ids_overlong_or_with_control_characters_are_replaced(lite_service: LiveService) -> None:
    """The caller's X-Request-Id is echoed only when short and plain; anything else gets a fresh id, and a header
    that smuggles a line break cannot add a header to the answer."""
    fresh = re.compile(rb"[0-9a-f]{32}")
    for value in (
        b"a" * 65,
        b"a" * 8000,
        b"tab\there",
        b"\xff\xfe",
        "ünï".encode(),
        b"sp ace",
        b"-lead",
        b"a/b",
        b"<script>",
        b"id%0d%0aX-Evil:1",
        b'{"json":1}',
    ):
        status, headers = raw_get(lite_service, value)
        assert status.endswith(b"200 OK") and fresh.fullmatch(headers[b"x-request-id"]), (value, headers)
        hostile_counts.tried("request_ids")
    status, headers = raw_get(lite_service, b"ok-1\r\nX-Evil: 1")  # a second header line, not part of the id
    assert headers[b"x-request-id"] == b"ok-1" and b"x-evil" not in headers
    for value in (b"abc\x01def", b"x\x00y", b"abc\x7f", b"a\x1b[31m"):  # waitress refuses these before the app
        status, headers = raw_get(lite_service, value)
        assert b" 400 " in status and b"x-evil" not in headers, (value, status)
        hostile_counts.tried("request_ids")
    status, headers = raw_get(lite_service, b"A" * 64)
    assert headers[b"x-request-id"] == b"A" * 64  # the longest id that is kept
    still_serving(lite_service, 119)


# --- 10. namespaces, attributes, filters and the batch endpoints ----------------------------------
DEEP = "[" * 50_000 + "]" * 50_000


def test_hostile_values_of_the_tenancy_fields_are_400_naming_the_field(lite_service: LiveService) -> None:
    svc = lite_service
    image = b64(photo(18, size=(64, 48)))
    ok(svc.post("add/base64", json={"base64": image, "key": "target", "attrs": {"a": 1}}))
    [target] = ok(svc.post("get/key", json={"key": "target"}))["data"]
    cases: list[tuple[str, dict, str]] = []
    for ns in ("-x", ".x", "a b", "a/b", "../etc", "*", "x" * 65, "ns\x00", "é", 5, True, ["a"], {"a": 1}, "a\nb"):
        cases.append(("count", {"namespace": ns}, "'namespace'"))
        cases.append(("add/base64", {"base64": image, "namespace": ns}, "'namespace'"))
    for attrs in (
        "a=1",
        "{",
        DEEP,
        "[1]",
        '{"a": NaN}',
        [1],
        5,
        {"a": {"b": 1}},
        {"": 1},
        {"1a": 1},
        {"a]": 1},
        {"a": [1]},
        {"a": 2**60},
        {"a": "x" * 2000},
        {f"k{i}": i for i in range(33)},
        {"a": ["x"] * 65},
        {"a": "\ud800"},
        {"a": None},
    ):
        cases.append(("add/base64", {"base64": image, "attrs": attrs}, "'attrs'"))
    for bad in (
        'category == "shoes"',
        'key != ""',
        "id > 0",
        "{",
        DEEP,
        "[]",
        "5",
        ["a"],
        7,
        True,
        {"a": []},
        {"a": {}},
        {"a": {"ne": 1}},
        {"a": {"gt": [1]}},
        {"a": {"gt": 1, "lt": "z"}},
        {"a": [[1]]},
        {"a": [{"b": 1}]},
        {"a": None},
        {"a b": 1},
        {'a"]': 1},
        {"a": 10**30},
        {"a": list(range(65))},
        {f"k{i}": 1 for i in range(17)},
        {"a": "\ud800"},
        {f"k{i}": list(range(60)) for i in range(5)},
    ):
        cases.append(("search/base64", {"base64": image, "filter": bad}, "'filter'"))
    for field, endpoint, values in (
        ("group_by_key", "search/base64", ("yes", 1, 0, [], "TRUE1")),
        ("on_duplicate", "add/base64", ("ignore", "", 1, ["skip"], "SKIP ")),
        ("after_id", "list", (-1, "x", 1.5, 2**53, [1])),
        ("limit", "list", (0, 1001, "x")),
        ("id", "search/id", (None, "", "x", 0, -1, 2**53, [1], 1.5, True)),
        ("include_self", "search/id", ("no", 2)),
    ):
        for value in values:
            body = {"base64": image} if endpoint.endswith("base64") else {}
            if endpoint == "search/id" and field != "id":
                body["id"] = target["id"]
            body[field] = value
            if value == "" and field == "on_duplicate":
                continue  # empty means "absent": the default applies
            cases.append((endpoint, body, f"'{field}'"))
    for items in (None, [], "x", "[", DEEP, 5, {"url": "x"}, [{"base64": image}] * 101):
        cases.append(("add/batch", {"items": items}, "'items'"))
        cases.append(("set/key", {"key": "k", "items": items}, "'items'"))
    for key in (None, "", [1], {"a": 1}, "a\x00", "x" * 513):
        cases.append(("set/key", {"key": key, "items": [{"base64": image}]}, "'key'"))
    for endpoint, body, field in cases:
        expect(svc.post(endpoint, json=body), 400, field)
        hostile_counts.tried("tenancy_fields")
    for raw, field in (
        ('"attrs": {"a": Infinity}', "'attrs'"),
        ('"attrs": {"a": NaN}', "'attrs'"),
        ('"filter": {"a": NaN}', "'filter'"),
        ('"filter": {"a": {"gt": -Infinity}}', "'filter'"),
    ):
        endpoint = "add/base64" if "attrs" in raw else "search/base64"
        expect(post_raw(svc, endpoint, '{"base64": "%s", %s}' % (image, raw)), 400, field, "finite")
        hostile_counts.tried("tenancy_fields")
    # In forms the same fields are text: JSON text for attrs and filter, true/false for booleans.
    for data, field in (
        ({"attrs": "{bad"}, "'attrs'"),
        ({"attrs": '"text"'}, "'attrs'"),
        ({"filter": "key == 'x'"}, "'filter'"),
        ({"group_by_key": "maybe"}, "'group_by_key'"),
    ):
        endpoint = "add/file" if "attrs" in data else "search/file"
        expect(svc.post(endpoint, files={"file": ("a.jpg", photo(18, size=(64, 48)))}, data=data), 400, field)
        hostile_counts.tried("tenancy_fields")
    # Items that are wrong one by one: the request is fine (200), each item answers as a single add would.
    weird = [
        None,
        5,
        "x",
        [],
        {},
        {"base64": image, "url": "http://127.0.0.1/"},
        {"base64": image, "attrs": "{"},
        {"base64": image, "key": "\x00"},
        {"path": 5},
        {"url": ["x"]},
        {"base64": image, "imgPath": 7},
    ]
    results = ok(svc.post("add/batch", json={"items": weird}))["data"]
    assert [r["code"] for r in results] == [400] * len(weird) and all(r["msg"] for r in results)
    hostile_counts.tried("tenancy_fields", len(weird))
    assert svc.count() == 1
    still_serving(svc, 115)


def test_hostile_values_of_the_export_fields_are_400_naming_the_field(lite_service: LiveService) -> None:
    """POST /export (an admin's read of every namespace): a bad window, a misspelt field or a namespace is a 400
    naming the field, never a window the caller did not mean."""
    svc = lite_service
    ok(svc.post("add/base64", json={"base64": b64(photo(18, size=(64, 48))), "key": "k", "namespace": "n1"}))
    cases: list[tuple[dict, tuple[str, ...]]] = []
    for field, values in (
        ("after", (-1, "x", 1.5, "1.5", 2**53, 10**30, [1], True, {"a": 1}, "1e3", " -2")),
        ("upto", (0, -1, "x", 1.5, 2**53, [1], False, {"a": 1})),
        ("limit", (0, 5001, -1, "x", 1.5, [1], True, "1e2")),
    ):
        cases.extend(({field: value}, (f"'{field}'",)) for value in values)
    windows = ((10, 10), (10, 5), (2**53 - 1, 2**53 - 1), ("7", "3"))
    cases.extend(({"after": after, "upto": upto}, ("'upto'", "above 'after'")) for after, upto in windows)
    extras = ({"after_id": 5}, {"cursor": "x"}, {"id": 1}, {"Limit": 3}, {"rows": []})
    cases.extend((extra, (f"'{next(iter(extra))}'", "unknown")) for extra in extras)
    cases.extend(({"namespace": ns}, ("'namespace'",)) for ns in ("n1", "-x", 5, ["n1"]))  # "" is absent
    for body, words in cases:
        expect(svc.post("export", json=body), 400, *words)
        hostile_counts.tried("tenancy_fields")
    for raw in ('{"after": NaN}', '{"limit": Infinity}', "[1]", '"x"', "{"):
        expect(post_raw(svc, "export", raw), 400)
        hostile_counts.tried("tenancy_fields")
    # Forms carry digits as text; an empty field is absent (its default).
    answer = ok(svc.post("export", data={"after": "0", "upto": str(2**53 - 1), "limit": "", "namespace": ""}))
    assert [r["key"] for r in answer["data"]["rows"]] == ["k"] and answer["data"]["total"] == 1
    still_serving(svc, 115)


def test_filter_values_that_look_like_milvus_syntax_stay_values(service: LiveService) -> None:
    """Every injection string of section 8 as an attribute value: the filter on it finds exactly its record."""
    svc = service
    # Distinct pictures: Milvus Lite's HNSW graph over many identical vectors can leave some of them
    # unreachable to a filtered search (a recall matter, not a quoting one).
    items = [
        {"base64": b64(photo(1900 + i, size=(64, 48))), "key": f"inj-{i}", "attrs": {"v": value, "tags": [value, "x"]}}
        for i, value in enumerate(INJECTION_KEYS)
    ]
    results = ok(svc.post("add/batch", json={"items": items}))["data"]
    assert all(r["code"] == 200 and r["created"] for r in results), results
    anchor = results[0]["id"]
    for i, value in enumerate(INJECTION_KEYS):
        for condition in ({"v": value}, {"tags": value}, {"v": [value, "never"]}, {"v": {"gte": value, "lte": value}}):
            hits = ok(
                svc.post("search/id", json={"id": anchor, "include_self": True, "limit": 100, "filter": condition})
            )["data"]
            assert [h["key"] for h in hits] == [f"inj-{i}"], (value, condition, hits)
            hostile_counts.tried("filter_injection_values")
    assert ok(svc.post("search/id", json={"id": anchor, "filter": {"v": '" or 1==1 or "x'}}))["data"] == []
    still_serving(svc, 116)


def test_bad_regions_are_400s_naming_region_and_store_nothing(lite_service: LiveService) -> None:
    svc = lite_service
    image = b64(photo(19, size=(64, 48)))
    box = {"x": 1, "y": 2, "w": 30, "h": 20}
    bad: list[object] = [
        {**box, "x": -1},
        {**box, "y": -0.5},
        {**box, "w": 0},
        {**box, "h": -3},
        {**box, "x": "1"},
        {**box, "w": "30"},
        {**box, "x": True},
        {**box, "h": None},
        {**box, "w": [30]},
        {**box, "z": 1},
        {"x": 1, "y": 2, "w": 30},
        {},
        {**box, "x": 1e300},
        {**box, "w": 10**400},
        {**box, "x": 2_000_000},
        {"x": 64, "y": 0, "w": 5, "h": 5},  # wholly outside the 64 x 48 image (its right edge is x=64)
        {"x": 0, "y": 100, "w": 5, "h": 5},
        "Auto",
        "box",
        "{",
        '{"x": 1, "y": 2, "w": 30, "h": 20',
        DEEP,
        "[1, 2, 3, 4]",
        [1, 2, 3, 4],
        5,
        True,
    ]
    for region in bad:
        for endpoint in ("add/base64", "search/base64"):
            expect(svc.post(endpoint, json={"base64": image, "key": "r", "region": region}), 400, "'region'")
            hostile_counts.tried("wrong_field_types")
    for raw in ('"region": {"x": NaN, "y": 0, "w": 1, "h": 1}', '"region": {"x": 0, "y": 0, "w": Infinity, "h": 1}'):
        for endpoint in ("add/base64", "search/base64"):
            expect(post_raw(svc, endpoint, f'{{"base64": "{image}", {raw}}}'), 400, "'region'", "finite")
            hostile_counts.tried("wrong_field_types")
    # In a form the box is JSON text: malformed text, or a box that is wrong, is the same 400.
    for text in ("{x: 1}", '{"x": 1, "y": 1, "w": 1, "h": 1', '{"x": -1, "y": 0, "w": 1, "h": 1}', "1,2,3,4"):
        for endpoint in ("add/file", "search/file"):
            resp = svc.post(endpoint, files={"file": ("a.jpg", photo(19, size=(64, 48)))}, data={"region": text})
            expect(resp, 400, "'region'")
            hostile_counts.tried("wrong_field_types")
    # search/id searches with the stored vector: a region there is refused, saying so.
    ok(svc.post("add/base64", json={"base64": image, "key": "target"}))
    [target] = ok(svc.post("get/key", json={"key": "target"}))["data"]
    for region in ("auto", box, "whole"):
        expect(svc.post("search/id", json={"id": target["id"], "region": region}), 400, "region", "stored vector")
        hostile_counts.tried("wrong_field_types")
    # add/batch: each bad region fails its own item (region null); the good item is stored.
    items = [{"base64": image, "key": f"i{i}", "region": r} for i, r in enumerate(bad[:6])]
    results = ok(svc.post("add/batch", json={"items": [*items, {"base64": image, "key": "good", "region": box}]}))
    assert [r["code"] for r in results["data"]] == [400] * len(items) + [200]
    assert all("'region'" in r["msg"] and r["region"] is None for r in results["data"][:-1])
    assert results["data"][-1]["region"] == box
    hostile_counts.tried("wrong_field_types", len(items))
    assert {r["key"] for r in ok(svc.post("list", json={}))["data"]["records"]} == {"target", "good"}
    still_serving(svc, 116)


# --- 11. duplicate scans ---------------------------------------------------------------------------
def test_hostile_values_of_the_duplicate_scan_fields_are_400_naming_the_field(lite_service: LiveService) -> None:
    svc = lite_service
    image = b64(photo(19, size=(64, 48)))
    for key in ("a", "b"):
        ok(svc.post("add/base64", json={"base64": image, "key": key}))
    cases: list[tuple[str, dict, str]] = []
    for score in (0, -0.5, 1.5, 1.0000001, "x", "", " ", True, [1], {"a": 1}, "NaN", "inf", "1e400"):
        if score in ("", " "):
            continue  # empty means "absent": the duplicate threshold in force applies
        cases.append(("duplicates/scan", {"min_score": score}, "'min_score'"))
    bad_filters = ('category == "shoes"', "id > 0", "{", DEEP, "[]", 7, ["a"], {"a": {"ne": 1}}, {'a"]': 1})
    cases.extend(("duplicates/scan", {"filter": bad}, "'filter'") for bad in bad_filters)
    for ns in ("-x", "../etc", "*", "x" * 65, "ns\x00", 5, ["a"]):
        cases.append(("duplicates/scan", {"namespace": ns}, "'namespace'"))
        cases.append(("duplicates", {"namespace": ns}, "'namespace'"))
    for field, values in (
        (
            "cursor",
            (
                5,
                ["x"],
                {"a": 1},
                True,
                "x" * 100,
                "nonsense",
                "abc.1",
                "0" * 16,
                f"{'0' * 16}.x",
                f"{'0' * 16}.-1",
                f"{'0' * 16}.1e3",
                f"{'0' * 16}.１",
                f"{'A' * 16}.1",
                "\x00",
                "é.1",
            ),
        ),
        ("limit", (0, 101, -1, "x", 1.5, [1], True, "1e2")),
    ):
        cases.extend(("duplicates", {field: value}, f"'{field}'") for value in values)
    # A scan must be done first: without one, a page answers 404 before it reads the cursor.
    job = svc.post("duplicates/scan", json={}).json()["data"]["job"]
    wait_until(lambda: ok(svc.get(f"api/image/sim/duplicates/scan/{job}"))["data"]["state"] == "done", 30)
    for endpoint, body, field in cases:
        expect(svc.post(endpoint, json=body), 400, field)
        hostile_counts.tried("duplicate_scan_fields")
    for raw in ('{"min_score": NaN}', '{"min_score": Infinity}', '{"filter": {"a": NaN}}'):
        expect(post_raw(svc, "duplicates/scan", raw), 400, "'min_score'" if "min" in raw else "'filter'")
        hostile_counts.tried("duplicate_scan_fields")
    # Job ids: text that cannot be one is 400 saying what a job id is; a well-formed unknown one is 404.
    for raw in ("x", "0" * 15, "0" * 17, "g" * 16, "A" * 16, "%00", "0%2e0", "1" * 300, "%C3%A9" * 8, job.upper()):
        expect(svc.get(f"api/image/sim/duplicates/scan/{raw}"), 400, "not a scan job id", "POST")
        hostile_counts.tried("duplicate_scan_fields")
    for unknown in ("0" * 16, "f" * 16):
        expect(svc.get(f"api/image/sim/duplicates/scan/{unknown}"), 404, "no scan job", "POST")
        hostile_counts.tried("duplicate_scan_fields")
    expect(svc.get(f"api/image/sim/duplicates/scan/{job}/x"), 404, "no such endpoint")
    expect(svc.get("api/image/sim/duplicates/scan"), 405, "not allowed")
    # Nothing hostile reached the store or the scan: the scan's one group is intact.
    [group] = ok(svc.post("duplicates", json={}))["data"]["groups"]
    assert sorted(r["key"] for r in group["records"]) == ["a", "b"] and svc.count() == 2
    still_serving(svc, 116)
