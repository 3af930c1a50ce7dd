"""The console's Duplicates view in a real browser (Debian's headless Chromium, driven by Playwright), against the
real service: its scan jobs, groups, thumbnails and del/id, on Milvus Lite with the real model.

The model runs with random weights, under which distinct pictures may score alike; the scans here therefore ask
for min_score 1 in the view, so only the MD5 rule groups records: the groups are the exact-byte copies this test
stores under other keys, whatever the weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.conftest import LiveService, photo
from tests.procs import CHROMIUM, CHROMIUM_ARGS
from tests.test_console_browser import Site, Watch, assert_clean, log_in, needs_chromium, open_page, shot

ADMIN, READER, WRITER = "dups-admin-5f1", "dups-reader-0b7", "dups-writer-c44"

# shop-1 holds photo 51 under three keys and photo 52 under two (exact bytes), and photo 53 alone; shop-2 holds
# another copy of photo 51, which no scan of shop-1 may group.
SHOP1 = (
    (51, "SKU-A"),
    (51, "SKU-A-copy1"),
    (51, "SKU-A-copy2"),
    (52, "SKU-B"),
    (52, "SKU-B-copy"),
    (53, "SKU-C"),
)


@pytest.fixture
def dup_site(start_service: Callable[..., LiveService], tmp_path: Path) -> Site:
    """A service with a TOKENS_FILE (an admin, and a read and a write token bound to shop-1) holding SHOP1."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{ADMIN} * admin\n{READER} shop-1 read\n{WRITER} shop-1 write\n")
    live = start_service(tokens_file=tokens)
    site = Site(live, live.base_url)
    for seed, key in (*SHOP1, (51, "SKU-A-elsewhere")):
        namespace = "shop-2" if key.endswith("elsewhere") else "shop-1"
        answer = live.post(
            "add/file",
            headers={"token": ADMIN},
            files={"file": (f"{key}.jpg", photo(seed))},
            data={"key": key, "namespace": namespace},
        )
        assert answer.status_code == 200, answer.text
    return site


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """The system Chromium, headless (never a downloaded browser build), as tests/test_console_browser.py has it."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def keys_left(site: Site, keys: list[str]) -> list[str]:
    """Which of `keys` still hold a record in shop-1, through the HTTP API."""
    answer = site.live.post("get/key", headers={"token": ADMIN}, json={"key": keys, "namespace": "shop-1"})
    assert answer.status_code == 200, answer.text
    return sorted({record["key"] for record in answer.json()["data"]})


def card_keys(group: Any) -> list[str]:
    """The keys of a group's cards, in the order shown."""
    return sorted(card.get_attribute("data-key") for card in group.get_by_test_id("dup-card").all())


def scan_in_view(page: Any, watch: Watch) -> None:
    """Open Duplicates (no scan yet: the hint), scan with min score 1, and wait for the groups."""
    page.get_by_test_id("nav-dups").click()
    expect(page.get_by_test_id("dups-empty")).to_contain_text("no finished scan yet")
    page.get_by_test_id("dups-min-score").fill("1")
    page.get_by_test_id("dups-scan").click()
    expect(page.get_by_test_id("dups-message")).to_contain_text("The scan finished in")
    expect(page.get_by_test_id("dups-progress")).to_be_hidden()
    assert [u for u in watch.requests if u.endswith("/duplicates/scan")], "the view started no scan"
    assert [u for u in watch.requests if "/duplicates/scan/" in u], "the view never asked the scan's progress"


@needs_chromium
def test_console_scan_keep_one_and_delete_chosen(dup_site: Site, chromium: Any) -> None:
    """A write token scans shop-1 from the view: two groups, largest first, with thumbnails, keys and scores.
    Reloading shows the finished scan at once. "Keep this one" on SKU-A asks "Delete 2 records?" and deletes
    exactly its two copies; in 中文 mode, "Delete chosen" on SKU-B-copy asks "删除 1 条记录？"; each group left with
    one record leaves the view."""
    context, page, watch = open_page(chromium)
    try:
        page.goto(f"{dup_site.url}/console")
        log_in(page, WRITER)
        scan_in_view(page, watch)
        groups = page.get_by_test_id("dup-group")
        expect(groups).to_have_count(2)
        assert card_keys(groups.nth(0)) == ["SKU-A", "SKU-A-copy1", "SKU-A-copy2"]  # largest first
        assert card_keys(groups.nth(1)) == ["SKU-B", "SKU-B-copy"]
        expect(groups.nth(0).get_by_test_id("thumb-img")).to_have_count(3)
        assert {s.inner_text() for s in page.get_by_test_id("dup-score").all()} == {"1.000"}
        assert "2 duplicate groups holding 5 records, of 6 scanned" in page.get_by_test_id("dups-summary").inner_text()
        shot(page, "console-duplicates")

        scans = len([u for u in watch.requests if u.endswith("/duplicates/scan")])
        page.reload()  # the latest finished scan is shown on opening the view, without a new scan
        expect(page.get_by_test_id("dup-group")).to_have_count(2)
        assert page.get_by_test_id("dups-summary").inner_text().startswith("Scan of ")
        assert len([u for u in watch.requests if u.endswith("/duplicates/scan")]) == scans

        first = page.get_by_test_id("dup-group").nth(0)
        first.locator("[data-testid=dup-card][data-key='SKU-A'] [data-testid=dup-keep]").click()
        expect(page.get_by_test_id("dups-message")).to_have_text("Deleted 2 records.")
        assert watch.dialogs[-1].startswith("Delete 2 records?"), watch.dialogs[-1]
        expect(page.get_by_test_id("dup-group")).to_have_count(1)  # SKU-A alone is no group
        assert keys_left(dup_site, ["SKU-A", "SKU-A-copy1", "SKU-A-copy2", "SKU-B", "SKU-B-copy", "SKU-C"]) == [
            "SKU-A",
            "SKU-B",
            "SKU-B-copy",
            "SKU-C",
        ]
        expect(page.locator("#count-chip")).to_have_text("4")

        page.get_by_test_id("lang-toggle").click()
        expect(page.get_by_test_id("nav-dups")).to_have_text("重复")
        expect(page.get_by_test_id("dups-delete-chosen")).to_be_disabled()  # nothing chosen yet
        page.locator("[data-testid=dup-card][data-key='SKU-B-copy'] [data-testid=dup-choose]").check()
        expect(page.get_by_test_id("dups-delete-chosen")).to_have_text("删除选中的 1 条")
        shot(page, "console-duplicates-zh")
        page.get_by_test_id("dups-delete-chosen").click()
        expect(page.get_by_test_id("dups-message")).to_have_text("已删除 1 条记录。")
        assert watch.dialogs[-1].startswith("删除 1 条记录？"), watch.dialogs[-1]
        expect(page.get_by_test_id("dup-group")).to_have_count(0)
        expect(page.get_by_test_id("dups-empty")).to_have_text("没有剩下的重复组。")
        assert keys_left(dup_site, ["SKU-A", "SKU-B", "SKU-B-copy", "SKU-C"]) == ["SKU-A", "SKU-B", "SKU-C"]
        other = dup_site.live.post("count", headers={"token": ADMIN}, json={"namespace": "shop-2"})
        assert other.json()["data"] == 1  # the other tenant's copy of photo 51 stays
        assert_clean(dup_site, watch)
    finally:
        context.close()


@needs_chromium
def test_console_admin_scans_a_namespace_read_token_only_views(dup_site: Site, chromium: Any) -> None:
    """An admin token scans shop-1 chosen in the namespace field (its thumbnails and progress asked for that
    namespace); a read token bound to shop-1 then sees those groups with every scan and delete control disabled,
    saying why, and cannot delete."""
    context, page, watch = open_page(chromium)
    try:
        page.goto(f"{dup_site.url}/console")
        log_in(page, ADMIN)
        page.get_by_test_id("namespace-input").fill("shop-1")
        page.get_by_test_id("namespace-input").dispatch_event("change")
        scan_in_view(page, watch)
        expect(page.get_by_test_id("dup-group")).to_have_count(2)
        expect(page.get_by_test_id("thumb-img")).to_have_count(5)  # shop-1's thumbnails, asked with ?namespace=
        assert "SKU-A-elsewhere" not in page.get_by_test_id("dups-groups").inner_text()
        page.get_by_test_id("dups-min-score").fill("2")  # out of range: the service's own message, verbatim
        page.get_by_test_id("dups-scan").click()
        refused = dup_site.live.post(
            "duplicates/scan", headers={"token": ADMIN}, json={"namespace": "shop-1", "min_score": 2}
        ).json()
        expect(page.get_by_test_id("dups-message")).to_have_text(f"{refused['msg']}HTTP {refused['code']}")
        expect(page.get_by_test_id("dup-group")).to_have_count(2)  # the groups shown stay

        page.get_by_test_id("logout").click()
        expect(page.get_by_test_id("dup-card")).to_have_count(0)  # a token's records leave with it
        log_in(page, READER)
        page.get_by_test_id("nav-dups").click()
        expect(page.get_by_test_id("dup-group")).to_have_count(2)
        why = "This token has no write right, so it cannot start a scan or delete records."
        expect(page.get_by_test_id("dups-rights-note")).to_have_text(why)
        controls = [
            page.get_by_test_id("dups-scan"),
            page.get_by_test_id("dups-delete-chosen"),
            *page.get_by_test_id("dup-keep").all(),
            *page.get_by_test_id("dup-choose").all(),
        ]
        assert len(controls) == 12
        for control in controls:
            expect(control).to_be_disabled()
            assert control.get_attribute("title") == why
            control.click(force=True)  # a disabled control does nothing: no dialog, no request
        assert not watch.dialogs and not [u for u in watch.requests if "/del/" in u]
        page.get_by_test_id("lang-toggle").click()
        expect(page.get_by_test_id("dups-rights-note")).to_have_text("此令牌没有写权限，不能开始扫描，也不能删除记录。")
        page.get_by_test_id("lang-toggle").click()
        assert dup_site.live.post("count", headers={"token": ADMIN}, json={"namespace": "shop-1"}).json()["data"] == 6
        assert_clean(dup_site, watch)
    finally:
        context.close()
