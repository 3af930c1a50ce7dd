"""The README and docs/ are part of the product: every example runs as written, and the pages stay whole.

Every shell line of the English pages is either an example, run here in order against a live service over
real HTTP (from a folder where `make sample` put the sample photo), or a known command that is not run
here (make, docker, the CLI). Each Chinese page shows the same commands as its English twin and names the
same endpoints and settings, the configuration page lists every setting with its default, and every
relative link points to a file (and heading) that exists.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conf.settings import Settings
from tests.conftest import ROOT, LiveService

DOCS = ROOT / "docs"
HAND_WRITTEN = [
    "README.md",
    "api.md",
    "configuration.md",
    "model.md",
    "operations.md",
    "deployment.md",
    "development.md",
]
# The pages `make bench` and the reliability report render in both languages; the docs link to them.
RENDERED = ["benchmarks.md", "reliability.md"]
# The hand-written pages, whose Chinese twins are translated by hand.
ENGLISH = [ROOT / "README.md"] + [DOCS / name for name in HAND_WRITTEN]
# Every English page, the rendered ones included (once they exist): their examples are run here too.
EVERY_PAGE = [ROOT / "README.md"] + sorted(DOCS.glob("*.md"))
# The docs serve the sample photo from a local web server; the test serves it from its own (image_host).
EXAMPLE_URL = "http://127.0.0.1:8080/motorcycle.jpg"
SETTING_NAMES = {name.upper() for name in Settings.model_fields}

# What a shell line of the docs may start with: an example (run by this test) or a command it does not run.
RUN = {"curl", "jq", "base64"}
NOT_RUN = {
    "make": "the Makefile's targets (make test runs this suite; make sample is run below)",
    "docker": "Docker Compose: no Docker daemon in the test environment",
    "mkdir": "the folders Docker Compose mounts",
    "python3": "the stand-in image host of the URL examples: the test serves the photo itself (image_host)",
    ".venv/bin/python": "the CLI (import, calibrate; test_importer.py and test_spaces.py run it) and pytest",
}


def twin(page: Path) -> Path:
    """The Chinese page of an English one."""
    return ROOT / "README.zh-CN.md" if page == ROOT / "README.md" else DOCS / "zh-CN" / page.name


def shell_lines(text: str) -> list[str]:
    """The lines of the shell code blocks, in order, without trailing comments: what a reader copies and runs."""
    blocks = re.findall(r"```(?:sh|bash|shell)\n(.*?)```", text, flags=re.S)
    return [
        line.split("  #")[0].rstrip()
        for block in blocks
        for line in block.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def command_word(line: str) -> str:
    """The command a shell line runs, after any leading VAR=value assignments."""
    words = line.split()
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        words.pop(0)
    return words[0] if words else ""


def examples(page: Path) -> list[str]:
    """The shell lines of a page that this test runs."""
    return [line for line in shell_lines(page.read_text("utf-8")) if command_word(line) in RUN]


def test_every_shell_line_is_an_example_or_a_known_command() -> None:
    for page in EVERY_PAGE + [twin(p) for p in EVERY_PAGE]:
        for line in shell_lines(page.read_text("utf-8")):
            assert command_word(line) in RUN | set(NOT_RUN), (
                f"{page.relative_to(ROOT)}: {line!r} is neither run by this test nor listed in NOT_RUN"
            )


def test_no_example_puts_an_image_inside_the_command_line() -> None:
    # "Argument list too long" beyond ~96 KB: base64 bodies go through a file (jq --rawfile, curl -d @file).
    for page in EVERY_PAGE:
        for line in examples(page):
            assert not re.search(r"\$\(\s*base64|`\s*base64", line), (page.name, line)


def test_every_page_with_examples_is_run() -> None:
    assert {str(p.relative_to(ROOT)) for p in EVERY_PAGE if examples(p)} == set(PAGE_CHECKS)


@pytest.fixture
def sample_dir(tmp_path: Path) -> Path:
    """`make sample` run into a fresh folder, as a reader runs it in a fresh clone (the venv is already installed)."""
    venv = Path(sys.prefix)
    pool = tmp_path / "img-pool"
    subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(ROOT),
            "sample",
            f"VENV={venv}",
            f"SAMPLE_DIR={pool}",
            "-o",
            f"{venv}/.installed",
            "-o",
            f"{venv}/.installed-dev",
        ],
        check=True,
        timeout=120,
    )
    return pool


def run_examples(page: Path, svc: LiveService, cwd: Path, image_url: str) -> list[tuple[str, str]]:
    """Run the page's examples in order (bash, from `cwd`); each curl answer must be a 200."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TOKEN": "readme-token"}
    results = []
    preparing = ""  # the lines that wrote the body a curl line then sends (jq ... > body.json)
    for line in examples(page):
        command = line.replace("http://localhost:7000", svc.base_url).replace(EXAMPLE_URL, image_url)
        done = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0 and not done.stderr, (line, done.returncode, done.stderr)
        if command_word(line) != "curl":
            preparing += line + "\n"
            continue
        if "/metrics" in line:
            assert re.search(r"^imgsim_records_stored \d", done.stdout, flags=re.M), (line, done.stdout)
        else:
            body = json.loads(done.stdout)
            # A duplicate scan is a job: its start answers 202 (accepted), every other example 200.
            expected = 202 if re.search(r"/duplicates/scan(\s|$)", line) else 200
            assert isinstance(body, list) or body["code"] == expected, (line, body)
        results.append((preparing + line, done.stdout))
        preparing = ""
    return results


def answers(results: list[tuple[str, str]]) -> Callable[..., object]:
    """`answer(*words)`: the `data` (or another `field` of the envelope) of the first example whose line holds all
    the words."""

    def answer(*words: str, field: str = "data") -> object:
        out = next(out for line, out in results if all(w in line for w in words))
        if "/metrics" in words:  # Prometheus text, not JSON
            return out
        body = json.loads(out)
        return body[field] if isinstance(body, dict) and field in body else body

    return answer


def is_webp(path: Path) -> bool:
    data = path.read_bytes()
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def check_readme(answer: Callable[..., object], svc: LiveService, cwd: Path) -> None:
    hits = answer("search/file")
    assert {h["key"] for h in hits} == {"SKU-1001", "SKU-1002"} and min(h["score"] for h in hits) > 0.999
    assert [r["code"] for r in answer("add/batch")] == [200, 200]
    assert answer("set/key")["kept"] == 1 and answer("set/key")["deleted"] == 0
    assert {h["key"] for h in answer("namespace", "filter")} == {"SKU-2001"}
    assert is_webp(cwd / "img-pool" / "motorcycle.webp")  # the thumbnail example saved the stored image's thumbnail
    assert {r["key"] for r in answer("/list")["records"]} == {"SKU-1001", "SKU-1002"}
    assert answer("/count") == 4 and answer("del/key") == 2 and svc.count() == 2


def check_api(answer: Callable[..., object], svc: LiveService, cwd: Path) -> None:
    hits = answer("search/file", "limit=5")
    assert hits[0]["score"] > 0.999 and {h["key"] for h in hits} == {"SKU-1001", "SKU-1002"}
    assert len(answer("search/base64", "limit: 1")) == 1
    assert is_webp(cwd / "img-pool" / "motorcycle.webp")
    assert answer("/count") == 2 and answer("del/id") == 1 and answer("del/key") == 1
    assert {h["key"] for h in answer("search/base64", "filter")} == {"SKU-2001", "SKU-2002"}
    assert {h["key"] for h in answer("search/file", "tags")} == {"SKU-2001"}
    grouped = [h["key"] for h in answer("group_by_key")]
    assert len(grouped) == len(set(grouped)) == 2
    assert answer("search/id")[0]["score"] > 0.999
    assert [r["code"] for r in answer("add/batch")] == [200, 200]
    assert answer("set/key")["deleted"] == 0 and answer("set/key")["kept"] == 1
    assert answer("on_duplicate")["key"] == "SKU-2001"  # skipped: the same picture is stored under SKU-2001
    assert {r["key"] for r in answer("/list", "after_id")["records"]} == {
        "SKU-2001",
        "SKU-2002",
        "SKU-2003",
        "SKU-2004",
    }
    assert "/api/image/sim/add/file" in answer("openapi.json")
    exported = answer("/export")  # every namespace (the example's token is an admin's), in id order
    assert exported["total"] == len(exported["rows"]) >= 4
    assert exported["collection"]["name"] == svc.runtime.store.collection
    assert {r["namespace"] for r in exported["rows"]} >= {"shop-1"}
    assert [r["id"] for r in exported["rows"]] == sorted(r["id"] for r in exported["rows"])
    box = {"x": 150, "y": 80, "w": 440, "h": 340}  # the region examples: the photo is 741 x 500 px
    assert answer("add/file", "region=", field="region") == box
    assert answer("search/file", "region=", field="region") == {**box, "w": 741 - 150}  # clipped at the right edge
    assert answer("search/file", "region=")[0]["key"] == "SKU-3001"
    auto = answer("search/path", "auto", field="region")
    assert 0 <= auto["x"] < auto["x"] + auto["w"] <= 741 and 0 <= auto["y"] < auto["y"] + auto["h"] <= 500
    assert [r["region"] for r in answer("get/key", "SKU-3001")] == [box]
    assert answer("duplicates/scan", "tee")["state"] in ("queued", "running", "done")
    assert answer("duplicates/scan/", "jq")["namespace"] == "shop-1"
    page = answer("--retry", "duplicates")
    assert page["scan"]["state"] == "done" and page["next"] is None
    # shop-1 holds the sample photo under SKU-2001..2004 at that point: one group of them all, the same bytes.
    assert [sorted(r["key"] for r in g["records"]) for g in page["groups"]] == [[f"SKU-200{n}" for n in range(1, 5)]]
    assert svc.count() == 0  # the namespace examples all act in shop-1


def check_operations(answer: Callable[..., object], svc: LiveService, cwd: Path) -> None:
    # the metrics example greps the record count: the page's examples stored nothing
    assert answer("/metrics").strip().splitlines()[-1] == "imgsim_records_stored 0.0"


PAGE_CHECKS: dict[str, Callable[[Callable[..., object], LiveService, Path], None]] = {
    "README.md": check_readme,
    "docs/api.md": check_api,
    "docs/operations.md": check_operations,
}


@pytest.mark.parametrize("name", sorted(PAGE_CHECKS))
def test_every_example_works_as_written(
    name: str, sample_dir: Path, image_host: Callable[[bytes], str], start_service: Callable[..., LiveService]
) -> None:
    assert shutil.which("jq"), "jq is missing: the base64 examples build their bodies with it (make test installs it)"
    photo = sample_dir / "motorcycle.jpg"
    assert 250_000 < photo.stat().st_size < 400_000  # the base64 examples must carry a photo of about 300 KB
    page = ROOT / name
    svc = start_service(token="readme-token", path_roots=str(sample_dir))
    results = run_examples(page, svc, sample_dir.parent, image_host(photo.read_bytes()))
    PAGE_CHECKS[name](answers(results), svc, sample_dir.parent)


def test_every_endpoint_has_an_example() -> None:
    shown = "\n".join(line for page in EVERY_PAGE for line in examples(page))
    for path in [
        "add/file",
        "add/url",
        "add/path",
        "add/base64",
        "add/batch",
        "set/key",
        "search/file",
        "search/url",
        "search/path",
        "search/base64",
        "search/id",
        "get/key",
        "del/id",
        "del/key",
        "count",
        "list",
        "export",
        "thumb/",
        "duplicates/scan",
        "duplicates/scan/",
        "duplicates",
    ]:
        assert f"/api/image/sim/{path}" in shown, path
    for path in ["/health", "/ready", "/metrics", "/openapi.json"]:
        assert f"localhost:7000{path}" in shown, path


# --- the Chinese pages, the configuration table, links ------------------------------------------------------

ENDPOINT = re.compile(
    r"(?<![A-Za-z.])/(?:api/image/sim/[a-z0-9_/|<>{}.-]+|health|ready|metrics|docs|console|"
    r"openapi\.json)\b"
)
SETTING = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")


def endpoints(text: str) -> set[str]:
    """Every endpoint path the text mentions (trailing punctuation trimmed)."""
    return {match.rstrip("./|") for match in ENDPOINT.findall(text)}


def settings(text: str) -> set[str]:
    """Every imgsim setting the text mentions by its environment-variable name."""
    return set(SETTING.findall(text)) & SETTING_NAMES


@pytest.mark.parametrize("page", EVERY_PAGE, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_page_has_a_chinese_twin_with_the_same_commands(page: Path) -> None:
    assert twin(page).exists(), f"{page.relative_to(ROOT)} has no Chinese twin {twin(page).relative_to(ROOT)}"
    assert shell_lines(twin(page).read_text("utf-8")) == shell_lines(page.read_text("utf-8"))


@pytest.mark.parametrize("page", ENGLISH, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_chinese_twin_names_the_same_endpoints_and_settings(page: Path) -> None:
    english, chinese = page.read_text("utf-8"), twin(page).read_text("utf-8")
    assert endpoints(chinese) == endpoints(english)
    assert settings(chinese) == settings(english)
    assert len(re.findall(r"[\u4e00-\u9fff]", chinese)) > len(english) // 20, "the Chinese page is not Chinese"
    # each links to the other near its top
    assert twin(page).name in "\n".join(english.splitlines()[:4])
    assert page.name in "\n".join(chinese.splitlines()[:4])


def test_the_pages_mention_the_endpoints_and_settings_at_all() -> None:
    assert len(settings((DOCS / "configuration.md").read_text("utf-8"))) > 40
    assert len(endpoints((DOCS / "api.md").read_text("utf-8"))) > 15  # the checks above are not vacuous


@pytest.mark.parametrize("page", [DOCS / "configuration.md", DOCS / "zh-CN" / "configuration.md"], ids=["en", "zh-CN"])
def test_the_configuration_page_lists_every_setting_with_its_default(page: Path) -> None:
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| ([^|]+) \|", page.read_text("utf-8"), flags=re.M))
    assert set(rows) == SETTING_NAMES
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


def test_the_readmes_are_short_and_name_the_licence() -> None:
    for page in (ROOT / "README.md", ROOT / "README.zh-CN.md"):
        text = page.read_text("utf-8")
        assert len(text.splitlines()) <= 300, page.name
        assert "Apache-2.0" in text and "](LICENSE)" in text, page.name
        assert "MODEL_NAME=efficientnet-lite0 make run" in text, page.name
    assert "Apache License" in (ROOT / "LICENSE").read_text("utf-8")


def test_the_docs_index_links_every_page() -> None:
    for index, folder in ((DOCS / "README.md", DOCS), (DOCS / "zh-CN" / "README.md", DOCS / "zh-CN")):
        text = index.read_text("utf-8")
        for name in HAND_WRITTEN[1:] + RENDERED:
            assert f"]({name})" in text, (index, name)
        assert folder.is_dir()


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text("utf-8"), flags=re.S)
    return {github_anchor(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def test_every_relative_link_points_to_an_existing_file_and_heading() -> None:
    pages = [ROOT / "README.md", ROOT / "README.zh-CN.md", *DOCS.rglob("*.md")]
    checked = 0
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text("utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            path = (page.parent / file_part).resolve() if file_part else page
            assert path.exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"
            if anchor and path.suffix == ".md":
                assert anchor in anchors(path), f"{page.relative_to(ROOT)} links to {target}: no such heading"
            checked += 1
    assert checked > 50
