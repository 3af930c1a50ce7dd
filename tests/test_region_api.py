"""Region search over real HTTP (real model, real Milvus Lite): a box of the query, "auto", "whole", and a box on
add; the answer's `region` is the box used, in pixels of the image after its EXIF orientation."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from pathlib import Path

from PIL import Image
from pymilvus import DataType, MilvusClient
from skimage import data

from model.embedder import DIM
from tests.conftest import LiveService, photo

# The catalog: real photos (scikit-image's sample data), stored as JPEG.
PRODUCTS = {"cat": data.chelsea, "coffee": data.coffee, "rocket": data.rocket, "astronaut": data.astronaut}
# Where the cat goes in the scene (512 x 512 px): about 15% of its area.
BOX = {"x": 229, "y": 60, "w": 243, "h": 162}


def jpeg(img: Image.Image, quality: int = 90, exif: bytes | None = None) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, **({"exif": exif} if exif else {}))
    return buf.getvalue()


def scene_with_cat() -> Image.Image:
    """The camera man photo (in RGB) with the cat pasted, resized, into BOX."""
    scene = Image.fromarray(data.camera()).convert("RGB")
    cat = Image.fromarray(data.chelsea()).resize((BOX["w"], BOX["h"]))
    scene.paste(cat, (BOX["x"], BOX["y"]))
    return scene


def add_catalog(svc: LiveService) -> None:
    for key, load in PRODUCTS.items():
        resp = svc.post("add/file", files={"file": (f"{key}.jpg", jpeg(Image.fromarray(load())))}, data={"key": key})
        assert resp.status_code == 200, resp.text


def search(svc: LiveService, image: bytes, region: object = None) -> dict:
    form = {} if region is None else {"region": region if isinstance(region, str) else json.dumps(region)}
    resp = svc.post("search/file", files={"file": ("q.jpg", image)}, data=form)
    assert resp.status_code == 200, resp.text
    return resp.json()


def score_of(answer: dict, key: str) -> float:
    return next(h["score"] for h in answer["data"] if h["key"] == key)


def test_a_box_search_finds_the_product_in_a_scene(lite_service: LiveService) -> None:
    add_catalog(lite_service)
    scene = jpeg(scene_with_cat(), quality=80)
    boxed = search(lite_service, scene, BOX)
    assert boxed["data"][0]["key"] == "cat" and boxed["data"][0]["score"] >= 0.999, boxed["data"]
    assert boxed["region"] == BOX and boxed["msg"] == "success" and boxed["code"] == 200
    whole = search(lite_service, scene)
    # Without the box the background outvotes the cat (random weights squeeze every score near 1).
    assert score_of(whole, "cat") <= score_of(boxed, "cat") - 0.005, (whole["data"], boxed["data"])
    assert whole["region"] == {"x": 0, "y": 0, "w": 512, "h": 512}
    # Search hits stay as they were: no region in them.
    assert set(boxed["data"][0]) == {"id", "key", "filepath", "score", "match"}


def test_a_box_is_in_pixels_of_the_exif_oriented_image(lite_service: LiveService) -> None:
    add_catalog(lite_service)
    shown = scene_with_cat().crop((0, 0, 512, 384))  # landscape, as the camera app shows it
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: the stored pixels are to be turned 90 degrees clockwise for display
    stored = shown.transpose(Image.Transpose.ROTATE_90)  # so the file holds the portrait, turned the other way
    assert stored.size == (384, 512)
    image = jpeg(stored, quality=95, exif=exif.tobytes())
    boxed = search(lite_service, image, {**BOX, "w": 1000})  # over the right edge of the 512 px wide shown image
    assert boxed["region"] == {**BOX, "w": 512 - BOX["x"]}
    assert boxed["data"][0]["key"] == "cat" and boxed["data"][0]["score"] >= 0.99, boxed["data"]
    # The same numbers read in the stored (unrotated) pixels would be another part of the picture.
    raw = jpeg(stored, quality=95)
    assert search(lite_service, raw, BOX)["data"][0]["score"] < boxed["data"][0]["score"]


def test_boxes_are_rounded_outward_and_clipped(lite_service: LiveService) -> None:
    image = photo(3)  # 320 x 240
    cases = [
        ({"x": 300, "y": 200, "w": 1000, "h": 1000}, {"x": 300, "y": 200, "w": 20, "h": 40}),
        ({"x": 10.5, "y": 0.2, "w": 5.2, "h": 3}, {"x": 10, "y": 0, "w": 6, "h": 4}),
        ({"x": 0, "y": 0, "w": 320, "h": 240}, {"x": 0, "y": 0, "w": 320, "h": 240}),
        ({"x": 319.9, "y": 239.9, "w": 0.01, "h": 0.01}, {"x": 319, "y": 239, "w": 1, "h": 1}),
    ]
    for asked, searched in cases:
        assert search(lite_service, image, asked)["region"] == searched, asked
    # JSON bodies take the box as an object, and the words as strings.
    b64 = base64.b64encode(image).decode()
    for region, searched in (
        (cases[0][0], cases[0][1]),
        ("whole", {"x": 0, "y": 0, "w": 320, "h": 240}),
        (json.dumps(cases[1][0]), cases[1][1]),
    ):
        resp = lite_service.post("search/base64", json={"base64": b64, "region": region})
        assert resp.status_code == 200 and resp.json()["region"] == searched, resp.text


def test_whole_and_auto_answer_a_box_inside_the_image(start_service: Callable[..., LiveService]) -> None:
    svc = start_service(search_region="auto")
    add_catalog(svc)
    scene = jpeg(scene_with_cat(), quality=80)
    assert search(svc, scene, "whole")["region"] == {"x": 0, "y": 0, "w": 512, "h": 512}
    for answer in (search(svc, scene, "auto"), search(svc, scene)):  # SEARCH_REGION=auto: auto when none is named
        box = answer["region"]
        assert set(box) == {"x", "y", "w", "h"} and all(isinstance(v, int) for v in box.values())
        assert box["x"] >= 0 and box["y"] >= 0 and box["w"] >= 1 and box["h"] >= 1
        assert box["x"] + box["w"] <= 512 and box["y"] + box["h"] <= 512
        assert answer["data"] and answer["data"][0]["key"] in PRODUCTS


def test_add_with_a_box_stores_it_and_records_return_it(lite_service: LiveService) -> None:
    svc = lite_service
    scene = jpeg(scene_with_cat(), quality=80)
    resp = svc.post(
        "add/file", files={"file": ("scene.jpg", scene)}, data={"key": "lifestyle", "region": json.dumps(BOX)}
    )
    assert resp.status_code == 200 and resp.json() == {"code": 200, "msg": "success", "data": True, "region": BOX}
    plain = svc.post("add/base64", json={"base64": base64.b64encode(photo(5)).decode(), "key": "plain"})
    assert plain.json()["region"] == {"x": 0, "y": 0, "w": 320, "h": 240}
    records = {r["key"]: r for r in svc.post("get/key", json={"key": "lifestyle,plain"}).json()["data"]}
    assert records["lifestyle"]["region"] == BOX and records["plain"]["region"] is None
    listed = {r["key"]: r for r in svc.post("list", json={}).json()["data"]["records"]}
    assert listed["lifestyle"]["region"] == BOX and listed["plain"]["region"] is None
    # The stored vector is the cat's: the cat photo itself finds the lifestyle shot with a high score.
    hits = search(svc, jpeg(Image.fromarray(data.chelsea())))["data"]
    assert hits[0]["key"] == "lifestyle" and hits[0]["score"] >= 0.999, hits
    # The thumbnail stays the whole photo.
    thumb = Image.open(io.BytesIO(svc.get(f"api/image/sim/thumb/{records['lifestyle']['id']}").content))
    assert thumb.size == (256, 256)
    # Re-adding the same image under the same key with another region replaces the region (and its vector).
    again = svc.post("add/file", files={"file": ("scene.jpg", scene)}, data={"key": "lifestyle", "region": "whole"})
    assert again.json()["region"] == {"x": 0, "y": 0, "w": 512, "h": 512}
    [record] = svc.post("get/key", json={"key": "lifestyle"}).json()["data"]
    assert record["region"] is None and record["id"] == records["lifestyle"]["id"]
    assert svc.count() == 2


def test_batch_and_set_key_items_carry_their_region(lite_service: LiveService) -> None:
    svc = lite_service
    b64 = base64.b64encode
    scene = b64(jpeg(scene_with_cat(), quality=80)).decode()
    items = [
        {"base64": scene, "key": "a", "region": BOX},
        {"base64": b64(photo(7)).decode(), "key": "b"},
        {"base64": b64(photo(8)).decode(), "key": "c", "region": {"x": 1000, "y": 0, "w": 5, "h": 5}},
        {"base64": b64(photo(9)).decode(), "key": "d", "region": "nowhere"},
    ]
    results = svc.post("add/batch", json={"items": items}).json()["data"]
    assert [r["code"] for r in results] == [200, 200, 400, 400]
    assert [r["region"] for r in results] == [BOX, {"x": 0, "y": 0, "w": 320, "h": 240}, None, None]
    assert "outside the image (320 x 240 px" in results[2]["msg"] and "'region'" in results[3]["msg"]
    assert {r["key"]: r["region"] for r in svc.post("list", json={}).json()["data"]["records"]} == {"a": BOX, "b": None}
    synced = svc.post("set/key", json={"key": "k", "items": [{"base64": scene, "region": BOX}]}).json()["data"]
    assert synced["added"] == 1 and synced["items"][0]["region"] == BOX
    [record] = svc.post("get/key", json={"key": "k"}).json()["data"]
    assert record["region"] == BOX


def test_a_box_outside_the_image_is_a_400_that_stores_nothing(lite_service: LiveService) -> None:
    outside = {"x": 400, "y": 10, "w": 50, "h": 50}
    for endpoint in ("add/file", "search/file"):
        resp = lite_service.post(
            endpoint, files={"file": ("a.jpg", photo(1))}, data={"key": "x", "region": json.dumps(outside)}
        )
        body = resp.json()
        assert resp.status_code == 400 and body["code"] == 400 and body["data"] is None
        assert "'region'" in body["msg"] and "320 x 240 px" in body["msg"] and "inside" in body["msg"], body
    assert lite_service.count() == 0


def test_auto_searches_a_proposed_box_when_the_whole_image_falls_short(lite_service: LiveService) -> None:
    """The cat on a dark canvas: with min_score 0.99 the whole image finds nothing, and auto answers the hits of a
    box the model proposed around the cat (random weights: the scores are squeezed near 1, so is the bar)."""
    add_catalog(lite_service)
    canvas = Image.new("RGB", (900, 640), (20, 20, 20))
    canvas.paste(Image.fromarray(data.chelsea()), (300, 240))  # 451 x 300 px
    image = jpeg(canvas)
    form = {"min_score": "0.99"}
    whole = lite_service.post("search/file", files={"file": ("q.jpg", image)}, data={**form, "region": "whole"})
    assert whole.json()["data"] == [] and whole.json()["region"] == {"x": 0, "y": 0, "w": 900, "h": 640}
    auto = lite_service.post("search/file", files={"file": ("q.jpg", image)}, data={**form, "region": "auto"}).json()
    box = auto["region"]
    assert auto["data"] and all(h["score"] >= 0.99 for h in auto["data"]), auto
    assert box != {"x": 0, "y": 0, "w": 900, "h": 640}
    assert box["x"] >= 0 and box["x"] + box["w"] <= 900 and box["y"] >= 0 and box["y"] + box["h"] <= 640
    # the box holds most of the cat
    overlap_w = min(box["x"] + box["w"], 751) - max(box["x"], 300)
    overlap_h = min(box["y"] + box["h"], 540) - max(box["y"], 240)
    assert overlap_w > 0 and overlap_h > 0 and overlap_w * overlap_h >= 0.5 * 451 * 300, box


def test_a_collection_created_before_regions_searches_with_boxes_but_refuses_to_store_them(
    start_service: Callable[..., LiveService], tmp_path: Path
) -> None:
    # The schema of imgsim before regions (namespace and attrs, no region), built field by field as that version did.
    uri, name = str(tmp_path / "old.db"), "before_regions"
    client = MilvusClient(uri=uri)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("namespace", DataType.VARCHAR, max_length=64)
    schema.add_field("key", DataType.VARCHAR, max_length=1024)
    schema.add_field("md5", DataType.VARCHAR, max_length=32)
    schema.add_field("filepath", DataType.VARCHAR, max_length=8192)
    schema.add_field("attrs", DataType.JSON)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    client.create_collection(name, schema=schema, consistency_level="Strong")
    client.close()
    svc = start_service(milvus_uri=uri, milvus_collection=name)
    image = base64.b64encode(photo(4)).decode()
    refused = svc.post(
        "add/base64", json={"base64": image, "key": "boxed", "region": {"x": 0, "y": 0, "w": 50, "h": 50}}
    )
    body = refused.json()
    assert refused.status_code == 409 and body["data"] is None
    assert "'region'" in body["msg"] and "MILVUS_COLLECTION" in body["msg"], body
    assert svc.post("add/base64", json={"base64": image, "key": "plain"}).status_code == 200
    assert svc.post("add/base64", json={"base64": image, "key": "plain2", "region": "whole"}).status_code == 200
    boxed = svc.post("search/base64", json={"base64": image, "region": {"x": 0, "y": 0, "w": 50, "h": 50}}).json()
    assert boxed["region"] == {"x": 0, "y": 0, "w": 50, "h": 50} and boxed["data"]
    items = [
        {"base64": image, "key": "b1", "region": {"x": 0, "y": 0, "w": 50, "h": 50}},
        {"base64": image, "key": "b2"},
    ]
    results = svc.post("add/batch", json={"items": items}).json()["data"]
    assert [(r["code"], r["region"]) for r in results] == [(409, None), (200, {"x": 0, "y": 0, "w": 320, "h": 240})]
    records = svc.post("list", json={}).json()["data"]["records"]
    assert sorted(r["key"] for r in records) == ["b2", "plain", "plain2"] and all(r["region"] is None for r in records)
