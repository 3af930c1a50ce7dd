"""The path endpoints only read regular files below PATH_ROOTS: traversal, symlinks, /proc, devices,
directories, FIFOs and unreadable files get 403 or 400, never the file's content, and never hang.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import hostile_counts
from tests.conftest import ROOT, LiveService, photo
from tests.test_hostile_input import expect, ok, still_serving

CANARY = "CANARY-7c1e0f-the-secret-file-content"


@pytest.fixture(scope="session", autouse=True)
def _write_counts() -> Iterator[None]:
    yield
    hostile_counts.write()


def both(svc: LiveService, path: str, code: int, *words: str) -> None:
    """add/path and search/path both answer `code` for `path`, quickly, without any file content."""
    for endpoint in ("add/path", "search/path"):
        started = time.monotonic()
        resp = svc.post(endpoint, json={"path": path}, timeout=20)
        assert time.monotonic() - started < 10, f"{endpoint} {path!r} took too long"
        expect(resp, code, *words)
        for secret in (CANARY, "root:x:0:0", "PATH=", "\x00"):
            assert secret not in resp.text, (path, resp.text)
        hostile_counts.tried("path_endpoints")


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """An outside folder with an image and a secret, next to the pool the service may read."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(photo(1, size=(64, 48)))
    (outside / "secret.txt").write_text(CANARY)
    evil = tmp_path / "pool-evil"  # shares the pool's name as a prefix
    evil.mkdir()
    (evil / "secret.jpg").write_bytes(photo(2, size=(64, 48)))
    return {"outside": outside, "evil": evil}


def test_paths_outside_the_roots_are_403(start_service: Callable[..., LiveService], layout: dict[str, Path]) -> None:
    svc = start_service()
    pool = svc.runtime.settings.allowed_roots[0]
    outside, evil = layout["outside"], layout["evil"]
    (pool / "sub").mkdir()
    (pool / "link.jpg").symlink_to(outside / "secret.jpg")
    (pool / "rel.jpg").symlink_to(Path("..") / "outside" / "secret.jpg")
    (pool / "linkdir").symlink_to(outside, target_is_directory=True)
    (pool / "proc").symlink_to("/proc/self", target_is_directory=True)
    (pool / "chain1").symlink_to(pool / "chain2")
    (pool / "chain2").symlink_to(outside / "secret.txt")
    (pool / "etc").symlink_to("/etc", target_is_directory=True)
    (pool / "loop").symlink_to(pool / "loop")
    forbidden = [
        "../outside/secret.jpg",
        "sub/../../outside/secret.jpg",
        f"{pool}/../outside/secret.jpg",
        f"{pool}/sub/../../outside/secret.txt",
        str(outside / "secret.jpg"),
        str(outside / "secret.txt"),
        str(evil / "secret.jpg"),
        f"{pool}-evil/secret.jpg",
        "/etc/passwd",
        "/etc/hostname",
        "//etc//passwd",
        "/./etc/../etc/passwd",
        "/",
        "/root",
        "/tmp",
        "/proc/self/environ",
        "/proc/self/cmdline",
        "/proc/self/mem",
        "/proc/self/fd/0",
        "/dev/zero",
        "/dev/urandom",
        "/sys/kernel/notes",
        str(pool / "link.jpg"),
        "rel.jpg",
        "linkdir/secret.jpg",
        str(pool / "linkdir" / "secret.txt"),
        "proc/environ",
        "proc/cmdline",
        "chain1",
        "etc/passwd",
        "../../../../../../../../etc/passwd",
        "sub/" + "../" * 40 + "etc/shadow",
    ]
    for path in forbidden:
        both(svc, path, 403, "outside the folders", "PATH_ROOTS")
    both(svc, "loop", 400)  # a symlink to itself: ELOOP, resolved inside the pool
    assert svc.count() == 0
    # Paths that leave and come back, and links that stay inside, are fine.
    (pool / "ok.jpg").write_bytes(photo(3, size=(64, 48)))
    (pool / "inside.jpg").symlink_to(pool / "ok.jpg")
    for path in (
        "ok.jpg",
        str(pool / "ok.jpg"),
        f"{pool}/sub/../ok.jpg",
        "sub/../ok.jpg",
        "inside.jpg",
        f"{pool}/../{pool.name}/ok.jpg",
        "./ok.jpg",
    ):
        ok(svc.post("add/path", json={"path": path, "key": "fine"}))
        hostile_counts.tried("path_endpoints")
    still_serving(svc, 200)


def test_non_files_are_400_and_never_hang(start_service: Callable[..., LiveService], layout: dict[str, Path]) -> None:
    svc = start_service(max_image_bytes=1_000_000)
    pool = svc.runtime.settings.allowed_roots[0]
    (pool / "dir.jpg").mkdir()
    os.mkfifo(pool / "fifo.jpg")
    sock_path = pool / "sock.jpg"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    server.listen()
    (pool / "secret.txt").write_text(CANARY)
    with open(pool / "sparse.jpg", "wb") as fh:  # 4 GiB on paper, nothing on disk
        fh.truncate(4 * 1024**3)
    (pool / "empty.jpg").write_bytes(b"")
    cases: list[tuple[str, int, tuple[str, ...]]] = [
        (str(pool), 400, ("directory",)),
        ("dir.jpg", 400, ("directory",)),
        (".", 400, ("directory",)),
        ("fifo.jpg", 400, ("not a regular file",)),
        ("sock.jpg", 400, ("cannot be opened",)),
        ("missing.jpg", 400, ("does not exist", f"looked for '{pool}/missing.jpg'", "relative path")),
        ("sub/missing.jpg", 400, ("does not exist", f"'{pool}/sub/missing.jpg'", f"PATH_ROOTS, '{pool}'")),
        ("~/x.jpg", 400, ("does not exist", f"'{pool}/~/x.jpg'")),
        ("%2e%2e/secret.jpg", 400, ("does not exist", f"'{pool}/%2e%2e/secret.jpg'")),
        ("x" * 300 + ".jpg", 400, ("cannot be opened",)),
        ("", 400, ("'path' is required",)),
        ("   ", 400, ("'path' is empty",)),
        ("x" * 5000, 400, ("at most 4096",)),
        ("secret.txt", 415, ()),
        ("empty.jpg", 415, ("empty",)),
        ("sparse.jpg", 413, ("MAX_IMAGE_BYTES",)),
    ]
    try:
        os.mknod(pool / "zero.jpg", 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # a /dev/zero inside the pool
        cases.append(("zero.jpg", 400, ()))
    except PermissionError:
        pass  # no CAP_MKNOD here: the FIFO and socket cover non-regular files
    for path, code, words in cases:
        both(svc, path, code, *words)
    server.close()
    assert svc.count() == 0
    still_serving(svc, 201)


def test_a_missing_file_shows_the_path_tried_inside_the_roots_only(
    start_service: Callable[..., LiveService], layout: dict[str, Path]
) -> None:
    """`img-pool/x.jpg` is looked for below the first root, and the 400 says where; a missing file outside the
    roots (or behind a link leading out) stays a 403 that reveals nothing about it."""
    svc = start_service()
    pool = svc.runtime.settings.allowed_roots[0]
    relative = expect(svc.post("add/path", json={"path": "img-pool/x.jpg"}), 400)["msg"]
    assert relative == (
        f"path 'img-pool/x.jpg' does not exist: the service looked for '{pool}/img-pool/x.jpg' "
        f"(a relative path is resolved against the first folder of PATH_ROOTS, '{pool}', not "
        "against the caller's working directory; send an absolute path or one relative to it)"
    )
    absolute = expect(svc.post("search/path", json={"path": f"{pool}/sub/../gone.jpg"}), 400)["msg"]
    assert absolute == f"path '{pool}/sub/../gone.jpg' does not exist: the service looked for '{pool}/gone.jpg'"
    outside = layout["outside"]
    (pool / "out-link.jpg").symlink_to(outside / "missing.jpg")  # dangles, and would lead out of the roots
    for path in (str(outside / "missing.jpg"), "../outside/missing.jpg", "out-link.jpg"):
        msg = expect(svc.post("add/path", json={"path": path}), 403, "outside the folders", "PATH_ROOTS")["msg"]
        assert "looked for" not in msg and str(outside) not in msg.replace(repr(path), ""), msg
        hostile_counts.tried("path_endpoints")


def test_several_path_roots(start_service: Callable[..., LiveService], tmp_path: Path) -> None:
    roots = [tmp_path / "shelf-a", tmp_path / "shelf-b", tmp_path / "shelf-c"]
    for index, root in enumerate(roots):
        root.mkdir()
        (root / "p.jpg").write_bytes(photo(10 + index, size=(64, 48)))
    svc = start_service(path_roots=f"{roots[0]}, {roots[1]}")
    ok(svc.post("add/path", json={"path": str(roots[0] / "p.jpg"), "key": "a"}))
    ok(svc.post("add/path", json={"path": str(roots[1] / "p.jpg"), "key": "b"}))
    both(svc, str(roots[2] / "p.jpg"), 403, "PATH_ROOTS")
    both(svc, str(roots[1] / ".." / "shelf-c" / "p.jpg"), 403, "PATH_ROOTS")
    # A relative path is taken relative to the first root.
    records = ok(svc.post("get/key", json={"key": "a"}))["data"]
    assert records[0]["filepath"] == str(roots[0] / "p.jpg")
    ok(svc.post("search/path", json={"path": "p.jpg"}))
    hostile_counts.tried("path_endpoints", 3)


# Tests run as root, for whom chmod 000 changes nothing. This child process imports the service,
# then drops to the `nobody` user before it serves requests (Flask's test client: the same app and
# error handling as over HTTP), so permission bits apply.
UNPRIVILEGED = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
from conf.settings import Settings
from service.api.app import create_app
from service.store.records import VectorStore
from service.usecases.deps import build_deps

pool = sys.argv[2]
settings = Settings(_env_file=None, image_pool_path=pool, path_roots=pool, model_weights="random", token=None,
                    milvus_uri=os.path.join(pool, "unused.db"))
class NoModel:
    info, duplicate_default = {}, 0.9
    def embed(self, batch):
        raise AssertionError("these requests never reach the model")
    preprocess = preprocess_box = propose = embed
client = create_app(settings, build_deps(settings, VectorStore(settings, 2048), NoModel())).test_client()
for warm_up in ("readable.txt", "missing.jpg"):  # load Flask's and Pillow's lazy imports while still root
    client.post("/api/image/sim/add/path", json={"path": warm_up})
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
assert os.geteuid() == 65534
out = {}
for path in sys.argv[3:]:
    resp = client.post("/api/image/sim/add/path", json={"path": path})
    out[path] = [resp.status_code, resp.get_json(), resp.get_data(as_text=True)]
print(json.dumps(out))
"""


def test_unreadable_files_are_400(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to the unprivileged user (as CI and the dev box run)")
    pool = Path(tempfile.mkdtemp(prefix="imgsim-perm-"))
    try:
        os.chmod(pool, 0o755)
        (pool / "locked.jpg").write_bytes(photo(20, size=(64, 48)))
        os.chmod(pool / "locked.jpg", 0o000)
        (pool / "writeonly.jpg").write_bytes(photo(21, size=(64, 48)))
        os.chmod(pool / "writeonly.jpg", 0o222)
        (pool / "readable.txt").write_text(CANARY)
        os.chmod(pool / "readable.txt", 0o644)
        (pool / "closed").mkdir(mode=0o700)
        (pool / "closed" / "inner.jpg").write_bytes(photo(22, size=(64, 48)))
        names = ["locked.jpg", "writeonly.jpg", "closed/inner.jpg", "readable.txt"]
        result = subprocess.run(
            [sys.executable, "-c", UNPRIVILEGED, str(ROOT), str(pool), *names],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=pool,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        answers = json.loads(result.stdout.strip().splitlines()[-1])
        for name in names[:3]:
            code, body, text = answers[name]
            assert code == 400 and body["code"] == 400, (name, body)
            assert "not readable" in body["msg"] and "permission denied" in body["msg"], body
            assert CANARY not in text
            hostile_counts.tried("path_endpoints")
        code, body, text = answers["readable.txt"]  # the same process can read what nobody may read
        assert code == 415 and CANARY not in text, body
        hostile_counts.tried("path_endpoints")
    finally:
        subprocess.run(["rm", "-rf", str(pool)], check=False)
