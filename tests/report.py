"""Render the test run's reliability figures into docs/reliability.md and docs/zh-CN/reliability.md.

    python -m tests.report            # take results/tests/*.json into docs/data/, rewrite both pages from there
    python -m tests.report --check    # exit 1 if a page differs from what docs/data/ gives (changes nothing)

The tests write their figures to results/tests/ (git-ignored; see tests/reliability.py and
tests/hostile_counts.py), so `make test` leaves the checkout clean. Only this command, run by `make docs`, copies
them into docs/data/reliability.json and docs/data/hostile_counts.json (committed) and renders the pages from
those files alone: every number is formatted once and written in English and Chinese from the label table below.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.docs import DATA, LANGS, RESULTS, Labels, Msg, Row, Seq, page, render_lines, replace_between, take_results
from bench.docs import write_pages as _write_pages

KIND = "reliability"
TEST_RESULTS = RESULTS / "tests"  # what the tests write (git-ignored)
FILES = ("reliability.json", "hostile_counts.json")

L = Labels(
    {
        "no_results": {
            "en": "_No results yet: run `make test`, then `make docs`._",
            "zh": "_还没有结果：先运行 `make test`，再运行 `make docs`。_",
        },
        "figures_head": {"en": "| Figure | Value |", "zh": "| 指标 | 数值 |"},
        "hostile": {
            "en": "Hostile inputs sent and checked (status, message, server still serving)",
            "zh": "发送并核对的恶意输入（状态码、错误信息、服务是否仍在工作）",
        },
        "hostile_value": {"en": "{total} in {categories} categories", "zh": "{categories} 个类别共 {total} 个"},
        "faults": {
            "en": "Faults injected (Milvus stopped, API started before Milvus, SIGKILLs, kill mid-copy)",
            "zh": "注入的故障（停掉 Milvus、先于 Milvus 启动 API、SIGKILL、复制中途被杀）",
        },
        "operations": {"en": "Operations checked against the expected outcome", "zh": "按预期结果核对的操作"},
        "records": {"en": "Records checked in the store afterwards", "zh": "事后在存储中核对的记录"},
        "lost": {"en": "**Acknowledged records lost**", "zh": "**丢失的已确认记录**"},
        "duplicated": {"en": "Records stored twice", "zh": "重复存储的记录"},
        "unexpected_5xx": {"en": "Unexpected 5xx answers", "zh": "意外的 5xx 响应"},
        "peak_rss": {
            "en": "Peak RSS of `main.py serve` under 200 concurrent maximum-size uploads",
            "zh": "200 个最大尺寸的并发上传下 `main.py serve` 的峰值 RSS",
        },
        "peak_rss_value": {
            "en": "{peak} MB ({idle} MB idle with the model loaded, +{growth} MB)",
            "zh": "{peak} MB（加载模型后空闲 {idle} MB，+{growth} MB）",
        },
        "tests_head": {
            "en": "| Test | Faults | Operations | Records | Lost | Notes |",
            "zh": "| 测试 | 故障 | 操作 | 记录 | 丢失 | 备注 |",
        },
        "dates": {
            "en": "Reliability figures of {reliability}{hostile}.",
            "zh": "可靠性数据时间为 {reliability}{hostile}。",
        },
        "hostile_date": {"en": "; hostile-input counts of {date}", "zh": "；恶意输入计数时间为 {date}"},
        "by_category": {
            "en": "Hostile inputs by category: {categories}.",
            "zh": "按类别统计的恶意输入：{categories}。",
        },
        "category": {"en": "{name} {n}", "zh": "{name} {n}"},
        # What each test did (test entry -> the table's first column).
        "faults.milvus_stopped_under_traffic": {
            "en": "Milvus server stopped under 4 clients' traffic, started again (same API process)",
            "zh": "4 个客户端有流量时停掉 Milvus 服务，再重新启动（同一个 API 进程）",
        },
        "faults.api_started_before_milvus": {
            "en": "`main.py serve` started while Milvus is down, Milvus started later",
            "zh": "Milvus 宕机时启动 `main.py serve`，之后再启动 Milvus",
        },
        "crash.import_kill9": {
            "en": "`main.py import --move-to` killed with SIGKILL twice, then rerun",
            "zh": "`main.py import --move-to` 被 SIGKILL 杀掉两次，然后重新运行",
        },
        "crash.import_killed_mid_copy": {
            "en": "import killed mid-copy into a pool on another filesystem, then rerun",
            "zh": "向另一个文件系统上的图片池复制文件时导入被杀，然后重新运行",
        },
        "crash.serve_kill9": {
            "en": "`main.py serve` killed with SIGKILL twice during bursts of adds and deletes (Lite)",
            "zh": "`main.py serve` 在成批的添加和删除期间被 SIGKILL 杀掉两次（Lite）",
        },
        "concurrency.lite": {
            "en": "16 clients in two tenants' namespaces mixing adds (identical ones racing), searches, lookups, deletes "
            "by key and id, and deletes of their ids in the other namespace (Lite)",
            "zh": "16 个客户端分属两个租户的命名空间，混合执行添加（包括相同图片的并发竞争）、搜索、查询、按 key 和 id 删除"
            "，"
            "以及在另一个命名空间中删除自己的 id（Lite）",
        },
        "concurrency.server": {
            "en": "the same against the Milvus 2.3 server",
            "zh": "同样的测试，针对 Milvus 2.3 服务",
        },
        "resources.max_size_uploads": {
            "en": "200 concurrent uploads of the maximum size, twice",
            "zh": "200 个最大尺寸的并发上传，共两轮",
        },
        "resources.slow_clients": {
            "en": "slow-body and slow-header clients beside normal requests",
            "zh": "慢速发送请求体和请求头的客户端与正常请求并存",
        },
        "resources.slowloris_beyond_connection_limit": {
            "en": "150 clients trickling request headers",
            "zh": "150 个客户端慢慢地发送请求头",
        },
        # The notes column.
        "n_milvus_stopped": {
            "en": "{answered_503} requests answered 503 while it was away; ready again {ready} s after Milvus was back",
            "zh": "Milvus 不在期间有 {answered_503} 个请求返回 503；Milvus 恢复 {ready} s 后重新 ready",
        },
        "n_api_before_milvus": {
            "en": "/health up in {healthy} s; ready {ready} s after Milvus started",
            "zh": "{healthy} s 后 /health 可用；Milvus 启动 {ready} s 后 ready",
        },
        "n_import_kill9": {"en": "killed with {moved} files moved", "zh": "两次被杀时分别已移动 {moved} 个文件"},
        "n_serve_kill9": {
            "en": "{adds} acknowledged adds ({deletes} deleted again), {cut} requests cut by the kills",
            "zh": "{adds} 次已确认的添加（其中 {deletes} 条又被删除），{cut} 个请求因进程被杀而中断",
        },
        "n_concurrency": {
            "en": "{clients} clients, {seconds} s: {ops}",
            "zh": "{clients} 个客户端，{seconds} s：{ops}",
        },
        "n_uploads": {
            "en": "{mb} MB JPEG/base64 and {mp} MP PNG uploads; peak RSS {peak} MB ({idle} MB idle, +{growth} MB)",
            "zh": "{mb} MB 的 JPEG/base64 和 {mp} MP 的 PNG 上传；峰值 RSS {peak} MB（空闲 {idle} MB，+{growth} MB）",
        },
        "n_slow_clients": {
            "en": "{slow} slow clients: normal requests {median} ms median (max {max} ms) vs {alone} ms alone",
            "zh": "{slow} 个慢客户端：正常请求中位数 {median} ms（最大 {max} ms），单独运行时为 {alone} ms",
        },
        "n_slowloris": {
            "en": "/health in {health} ms meanwhile; all cut off after {cut} s",
            "zh": "其间 /health 耗时 {health} ms；{cut} s 后全部被切断",
        },
        # Hostile-input categories (tests/hostile_counts.py); a category not named here shows as its name.
        "c_animated_gif": {"en": "animated gif", "zh": "动图 GIF"},
        "c_base64": {"en": "base64", "zh": "base64"},
        "c_decompression_bombs": {"en": "decompression bombs", "zh": "解压炸弹"},
        "c_empty_or_missing_file": {"en": "empty or missing file", "zh": "空文件或缺少文件"},
        "c_filter_injection_keys": {"en": "filter injection keys", "zh": "过滤表达式注入 key"},
        "c_filter_injection_values": {"en": "filter injection values", "zh": "过滤表达式注入值"},
        "c_form_field_flood": {"en": "form field flood", "zh": "表单字段洪泛"},
        "c_high_bit_depth_and_cmyk": {"en": "high bit depth and cmyk", "zh": "高位深与 CMYK"},
        "c_huge_or_broken_metadata": {"en": "huge or broken metadata", "zh": "超大或损坏的元数据"},
        "c_invalid_json": {"en": "invalid json", "zh": "无效 JSON"},
        "c_non_image_bytes": {"en": "non image bytes", "zh": "非图片字节"},
        "c_nul_and_control_chars": {"en": "nul and control chars", "zh": "NUL 与控制字符"},
        "c_path_endpoints": {"en": "path endpoints", "zh": "路径类接口"},
        "c_property_examples": {"en": "property examples", "zh": "属性测试样例"},
        "c_request_ids": {"en": "request ids", "zh": "请求 id"},
        "c_schemathesis_fuzz_requests": {"en": "schemathesis fuzz requests", "zh": "schemathesis 模糊测试请求"},
        "c_tenancy_fields": {"en": "tenancy fields", "zh": "租户相关字段"},
        "c_thumb_ids": {"en": "thumb ids", "zh": "缩略图 id"},
        "c_tiny_images": {"en": "tiny images", "zh": "极小图片"},
        "c_token": {"en": "token", "zh": "token"},
        "c_truncated_or_corrupt": {"en": "truncated or corrupt", "zh": "截断或损坏"},
        "c_unicode_and_long_keys": {"en": "unicode and long keys", "zh": "Unicode 与超长 key"},
        "c_url_endpoints": {"en": "url endpoints", "zh": "URL 类接口"},
        "c_wrong_content_type": {"en": "wrong content type", "zh": "错误的 Content-Type"},
        "c_wrong_field_types": {"en": "wrong field types", "zh": "错误的字段类型"},
    }
)


def _load(folder: Path, name: str) -> dict[str, Any] | None:
    try:
        return json.loads((folder / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _named(key: str, fallback: str) -> Msg | str:
    """The label `key` when the table has it, else `fallback` (a test or category added since)."""
    return L(key) if key in L.table else fallback


def _notes(name: str, t: dict[str, Any]) -> Msg | str:
    if name == "faults.milvus_stopped_under_traffic":
        return L("n_milvus_stopped", answered_503=str(t["answered_503"]), ready=str(t["ready_after_restart_s"]))
    if name == "faults.api_started_before_milvus":
        return L("n_api_before_milvus", healthy=str(t["api_healthy_s"]), ready=str(t["ready_after_milvus_up_s"]))
    if name == "crash.import_kill9":
        return L("n_import_kill9", moved=Seq([str(n) for n in t["moved_when_killed"]], "names"))
    if name == "crash.serve_kill9":
        return L(
            "n_serve_kill9",
            adds=str(t["acknowledged_adds"]),
            deletes=str(t["acknowledged_deletes"]),
            cut=str(t["in_flight_at_kill"]),
        )
    if name.startswith("concurrency."):
        ops = ", ".join(f"{k} {v}" for k, v in t["ops"].items())  # operation names, the same in every language
        return L("n_concurrency", clients=str(t["clients"]), seconds=str(t["seconds"]), ops=ops)
    if name == "resources.max_size_uploads":
        return L(
            "n_uploads",
            mb=str(t["max_image_bytes"] // (1024 * 1024)),
            mp=str(t["max_image_pixels"] // 1_000_000),
            peak=str(t["peak_rss_mb"]),
            idle=str(t["base_rss_mb"]),
            growth=str(max(t["peak_growth_mb"])),
        )
    if name == "resources.slow_clients":
        return L(
            "n_slow_clients",
            slow=str(t["slow_clients"]),
            median=str(t["with_slow_clients_median_ms"]),
            max=str(t["with_slow_clients_max_ms"]),
            alone=str(t["normal_median_ms"]),
        )
    if name == "resources.slowloris_beyond_connection_limit":
        return L("n_slowloris", health=str(t["health_ms"]), cut=str(t["trickling_cut_off_after_s"]))
    return ""


def reliability_lines(rel: dict[str, Any] | None, hostile: dict[str, Any] | None) -> list[Any]:
    """Everything between the reliability markers, once, for every language."""
    if rel is None and hostile is None:
        return [L("no_results")]
    out: list[Any] = [L("figures_head"), "|---|---|"]
    if hostile:
        cats = hostile.get("categories", {})
        out.append(Row([L("hostile"), L("hostile_value", total=str(hostile["total"]), categories=str(len(cats)))]))
    if rel:
        tot = rel["totals"]
        out += [
            Row([L("faults"), str(tot["faults_injected"])]),
            Row([L("operations"), str(tot["operations_checked"])]),
            Row([L("records"), str(tot["records_checked"])]),
            Row([L("lost"), f"**{tot['records_lost']}**"]),
            Row([L("duplicated"), str(tot["records_duplicated"])]),
            Row([L("unexpected_5xx"), str(tot["unexpected_5xx"])]),
        ]
        up = rel["tests"].get("resources.max_size_uploads")
        if up:
            out.append(
                Row(
                    [
                        L("peak_rss"),
                        L(
                            "peak_rss_value",
                            peak=str(up["peak_rss_mb"]),
                            idle=str(up["base_rss_mb"]),
                            growth=str(max(up["peak_growth_mb"])),
                        ),
                    ]
                )
            )
    out.append("")
    if rel:
        out += [L("tests_head"), "|---|---|---|---|---|---|"]
        out += [
            Row(
                [
                    _named(name, name),
                    str(t.get("faults_injected", 0)),
                    str(t.get("operations_checked", 0)),
                    str(t.get("records_checked", 0)),
                    str(t.get("records_lost", 0)),
                    _notes(name, t),
                ]
            )
            for name, t in rel["tests"].items()
        ]
        out += [
            "",
            L(
                "dates",
                reliability=rel["updated"],
                hostile=L("hostile_date", date=hostile["updated"]) if hostile else "",
            ),
        ]
    if hostile:
        cats = Seq(
            [
                L("category", name=_named(f"c_{k}", k.replace("_", " ")), n=str(v))
                for k, v in hostile.get("categories", {}).items()
            ]
        )
        out += ["", L("by_category", categories=cats)]
    return out


def render_from(data: Path = DATA) -> list[Any]:
    """The generated part from the committed figures in `data`."""
    return reliability_lines(_load(data, "reliability.json"), _load(data, "hostile_counts.json"))


def write_pages(results: Path = TEST_RESULTS, data: Path = DATA) -> list[Path]:
    """Take the tests' latest figures from `results` into `data`, then rewrite both pages from `data`."""
    take_results(results, data, FILES)
    return _write_pages(KIND, render_from(data))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.report", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that the pages match docs/data/")
    args = parser.parse_args(argv)
    if args.check:
        lines = render_from()
        stale = []
        for lang in LANGS:
            text = page(KIND, lang).read_text(encoding="utf-8")
            if replace_between(text, KIND, render_lines(lines, lang)) != text:
                stale.append(page(KIND, lang))
        for path in stale:
            print(f"{path} is out of date: run `make docs`", file=sys.stderr)
        return 1 if stale else 0
    for path in write_pages():
        print(f"rewrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
