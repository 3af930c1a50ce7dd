"""The README is part of the product: every curl example runs as written, and the config table is complete."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from conf.settings import Settings
from tests.conftest import ROOT, LiveService, photo

README = (ROOT / "README.md").read_text()
EXAMPLE_URL = "https://shop.example.com/img/shoe.jpg"


def curl_lines() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", README, flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.startswith("curl ")]


@pytest.fixture
def image_server(image_host: Callable[[bytes], str], shoe: Path) -> str:
    """Stands in for the shop's image host (no internet here): serves shoe.jpg on loopback."""
    return image_host(shoe.read_bytes())


@pytest.fixture
def shoe(tmp_path: Path) -> Path:
    (tmp_path / "img-pool").mkdir(exist_ok=True)
    path = tmp_path / "img-pool" / "shoe.jpg"
    path.write_bytes(photo(1))
    return path


def test_every_curl_example_works_as_written(shoe: Path, image_server: str, tmp_path: Path,
                                             start_service: Callable[..., LiveService]) -> None:
    svc = start_service(token="readme-token", path_roots=str(shoe.parent))
    lines = curl_lines()
    assert len(lines) >= 25  # every endpoint and field has its example
    answers = []
    for line in lines:
        command = line.replace("http://localhost:7000", svc.base_url).replace(EXAMPLE_URL, image_server)
        if "/thumb/" in line:  # the README's id is an example: ask for the thumbnail of the real SKU-1001
            [record] = svc.post("get/key", json={"key": ["SKU-1001"]}).json()["data"]
            command = re.sub(r"/thumb/\d+", f"/thumb/{record['id']}", command)
        result = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                                env={"PATH": "/usr/bin:/bin", "TOKEN": "readme-token"})
        body = json.loads(result.stdout)
        assert body["code"] == 200, (line, body)
        answers.append(body)
    thumb = (tmp_path / "shoe.webp").read_bytes()  # the thumb example saved the stored image's thumbnail
    assert thumb[:4] == b"RIFF" and thumb[8:12] == b"WEBP"
    hits = next(a["data"] for a, line in zip(answers, lines) if "search/file" in line)
    assert hits[0]["score"] > 0.999 and {h["key"] for h in hits} == {"SKU-1001", "SKU-1002"}
    deleted_by_key = next(a["data"] for a, line in zip(answers, lines) if "del/key" in line)
    assert deleted_by_key == 2 and svc.count() == 0  # the namespace examples all act in shop-1

    def answer(*words: str) -> object:
        return next(a["data"] for a, line in zip(answers, lines) if all(w in line for w in words))
    assert {h["key"] for h in answer("search/base64", "filter")} == {"SKU-2001", "SKU-2002"}
    grouped = [h["key"] for h in answer("group_by_key")]
    assert len(grouped) == len(set(grouped)) == 2
    assert answer("search/id")[0]["score"] > 0.999
    assert [r["code"] for r in answer("add/batch")] == [200, 200]
    assert answer("set/key")["deleted"] == 0 and answer("set/key")["kept"] == 1
    assert answer("on_duplicate")["key"] == "SKU-2001"  # skipped: the same picture is stored under SKU-2001
    assert {r["key"] for r in answer("/list", "after_id")["records"]} == {"SKU-2001", "SKU-2002", "SKU-2003", "SKU-2004"}


def test_config_table_lists_every_setting_with_its_default() -> None:
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| ([^|]+) \|", README, flags=re.M))
    assert set(rows) == {name.upper() for name in Settings.model_fields}
    for name, field in Settings.model_fields.items():
        value = field.default  # the declared default, whatever this process's environment says
        shown = rows[name.upper()].strip().strip("`")
        if value is None or name == "path_roots":
            continue
        if hasattr(value, "value"):  # enums
            text = value.value
        elif isinstance(value, bool):
            text = str(value).lower()
        elif isinstance(value, float) and value.is_integer():
            text = int(value)
        elif isinstance(value, Path):
            text = f"./{value}"
        else:
            text = value
        assert shown == str(text), name
