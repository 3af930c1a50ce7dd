"""The duplicate-scan part of the benchmarks page (from duplicates.json), in every language."""

from __future__ import annotations

from typing import Any

from bench.docs import Labels, Row, Seq
from bench.report import fmt

L = Labels.load("report_duplicates")


def ms(t: dict[str, Any]) -> str:
    """'12.3 / 20.1': median and p95 milliseconds."""
    return f"{fmt(t['p50_ms'])} / {fmt(t['p95_ms'])}"


def duplicates_section(d: dict[str, Any]) -> list[Any]:
    """What was scanned, then one row per backend: time and phases, RAM, groups, searches beside the scan."""
    p = d["planted"]
    out: list[Any] = [
        "",
        L("title"),
        "",
        L(
            "intro",
            records=f"{d['records']:,}",
            dim=str(d["dim"]),
            exact=str(p["exact_groups"]),
            near=str(p["near_groups"]),
            copies=str(p["copies"]),
            lo=f"{p['near_cosine'][0]}",
            hi=f"{p['near_cosine'][1]}",
            foreign=str(p["foreign_copies"]),
            min_score=f"{d['min_score']}",
            default=f"{d['model_duplicate_default']}",
        ),
        "",
        L("head"),
        "|---|---:|---|---:|---:|---|---|---|",
    ]
    for backend, e in d["backends"].items():
        name: Any = L(backend) if backend in ("lite", "server") else backend
        if "error" in e:
            out.append(Row([name, L("failed", error=e["error"]), "", "", "", "", "", ""]))
            continue
        g, ph, s = e["groups"], e["phases"], e["searches"]
        out.append(
            Row(
                [
                    L("versioned", label=name, version=e["server_version"]),
                    fmt(e["scan_s"]),
                    f"{fmt(ph['read_vectors_s'])} / {fmt(ph['find_groups_s'])} / {fmt(ph['read_details_s'])}",
                    fmt(e["rss"]["added_mb"], 0),
                    fmt(e["rss"]["children_added_mb"], 0) if backend == "server" else L("in_process"),
                    L(
                        "groups",
                        found=str(g["found"]),
                        planted=str(g["planted_found_exactly"]),
                        of=str(g["planted"]),
                        others=str(g["other_groups"]),
                        foreign=str(g["foreign_records"]),
                    ),
                    L(
                        "during",
                        n=str(s["during_scan"]["n"]),
                        ms=ms(s["during_scan"]),
                        errors=str(s["during_scan"]["errors"]),
                    ),
                    ms(s["idle"]),
                ]
            )
        )
    loads = [
        L("load_of", backend=L(b), load0=f"{e['loadavg_before'][0]:.1f}", load1=f"{e['loadavg_after'][0]:.1f}")
        for b, e in d["backends"].items()
        if "loadavg_before" in e
    ]
    out += ["", L("notes", date=d["date"], cpus=str(d["cpus"]), loads=Seq(loads, "clauses"))]
    return out
