"""The region-search part of the benchmarks page (from regions.json), in every language."""

from __future__ import annotations

from typing import Any

from bench.docs import Labels, Msg, Row, Seq

L = Labels.load("report_regions")
SCENE_METHODS = ("whole", "auto", "box")


def ci(metrics: dict[str, Any], name: str) -> str:
    """'0.912 (0.88-0.94)': a metric and its 95% interval ("n/a" when no query was measured)."""
    if metrics.get(name) is None:
        return "n/a"
    lo, hi = metrics[f"{name}_ci95"]
    return f"{metrics[name]:.3f} ({lo:.2f}-{hi:.2f})"


def delta(d: dict[str, Any] | None) -> str:
    """'+0.012 (-0.004..+0.029)': a paired difference and its 95% interval."""
    if d is None:
        return "n/a"
    return f"{d['delta']:+.3f} ({d['ci95'][0]:+.3f}..{d['ci95'][1]:+.3f})"


def share(value: float | None) -> str:
    """A share as a whole percentage."""
    return "n/a" if value is None else f"{value * 100:.0f}%"


def ms(t: dict[str, Any] | None) -> str:
    """'12.3 / 20.1': median and p95 milliseconds."""
    if not t or t.get("p50_ms") is None:
        return "n/a"
    return f"{t['p50_ms']:.1f} / {t['p95_ms']:.1f}"


def intro(r: dict[str, Any]) -> list[Any]:
    """What the queries are, what is searched, how the methods work."""
    sc, paste, m = r["scenes"], r["paste"], r["model"]
    closest = sc["near_duplicates"]["closest"] or {}
    return [
        "",
        L("title"),
        "",
        L(
            "intro",
            photos=str(sum(paste["photos"].values())),
            scenes=str(sc["count"]),
            width=str(sc["size"][0]),
            height=str(sc["size"][1]),
            areas=Seq([share(a) for a in paste["areas"]], "list"),
            quality=str(paste["jpeg_quality"]),
            seed=str(paste["seed"]),
            closest=str(closest.get("bits", "n/a")),
            bits=str(sc["near_duplicates"]["threshold_bits"]),
            tune_scenes=str(sc["tune"]),
            eval_scenes=str(sc["eval"]),
            eval_photos=str(paste["photos"]["eval"]),
            gallery=str(r["gallery"]["items"]),
            config=f"{m['resize']}+{m['pooling']}" + ("+trim" if m["trim"] == "on" else ""),
            precision=str(m["precision"]),
        ),
        "",
        L("methods", gate=f"{r['auto']['gate']:.2f}"),
    ]


def scene_table(r: dict[str, Any]) -> list[Any]:
    """Per area: each method's recall@1, recall@10, mAP (eval), auto's boxes, and the time per query."""
    out: list[Any] = ["", L("scene_head"), "|---|---|---:|---:|---:|---:|---:|"]
    timing = r["timing"]
    for group, row in r["scene_rows"].items():
        e = row["eval"]
        for n, method in enumerate(m for m in SCENE_METHODS if m in e):
            x = e[method]
            boxes = (
                L("boxes", share=share(x["box_share"]), located=share(x["iou_50_share"]))
                if method == "auto" and x["iou_50_share"] is not None
                else (share(x["box_share"]) if method == "auto" else "-")
            )
            out.append(
                Row(
                    [
                        L("area", area=group, n=str(x["n"])) if n == 0 else "",
                        L(f"m_{method}"),
                        ci(x, "recall_at_1"),
                        ci(x, "recall_at_10"),
                        ci(x, "map"),
                        boxes,
                        ms(timing.get(method)),
                    ]
                )
            )
    ratio = timing.get("auto_over_whole_p50")
    out += [
        "",
        L(
            "time",
            whole=ms(timing["whole"]),
            auto=ms(timing["auto"]),
            ratio="n/a" if ratio is None else f"{ratio:.2f}",
            transforms=ms(timing["auto_transforms"]),
        ),
    ]
    lone = timing.get("lone_http")
    if lone is not None:
        out += [
            "",
            L(
                "lone",
                catalog=str(lone["catalog"]),
                queries=str(lone["queries"]),
                plain=ms(lone["plain"]),
                auto=ms(lone["auto"]),
                ratio=f"{lone['auto_over_plain_p50']:.2f}",
            ),
        ]
    return out


def views_table(r: dict[str, Any]) -> list[Any]:
    """Every second-view pair, one query each: the answer's rank and score by whole and by auto."""
    sv = r["second_views"]
    if not sv["pairs"]:
        return []
    out: list[Any] = ["", L("views_intro", n=str(len(sv["pairs"]))), "", L("views_head"), "|---|---|---|---|---:|---:|"]
    out += [
        Row(
            [
                p["pair"],
                L(f"kind_{p['kind']}"),
                p["split"],
                f"`{p['answer']}`",
                *(L("rank", rank=str(p[m]["rank"]), score=f"{p[m]['score']:.3f}") for m in ("whole", "auto")),
            ]
        )
        for p in sv["pairs"]
    ]
    a = sv["kinds"].get("all")
    if a:
        out += [
            "",
            L(
                "views_all",
                n=str(a["whole"]["n"]),
                whole=f"{a['whole']['recall_at_1']:.2f}",
                auto=f"{a['auto']['recall_at_1']:.2f}",
                whole10=f"{a['whole']['recall_at_10']:.2f}",
                auto10=f"{a['auto']['recall_at_10']:.2f}",
            ),
        ]
    if sv["skipped"]:
        out += ["", L("views_skipped", pairs=Seq([f"{s['pair']} ({s['why']})" for s in sv["skipped"]], "clauses"))]
    return out


def transforms_table(r: dict[str, Any]) -> list[Any]:
    """Today's transforms: recall@1 whole against auto (eval), the paired difference, how often a box answered."""
    t = r["transforms"]
    out: list[Any] = ["", L("transforms_intro"), "", L("transforms_head"), "|---|---:|---:|---:|---:|---:|"]
    for name in t["names"]:
        x = t["eval"][name]
        if not x["n"]:
            continue
        out.append(
            Row(
                [
                    name,
                    str(x["n"]),
                    f"{x['whole_r1']:.3f}",
                    f"{x['auto_r1']:.3f}",
                    delta(x["delta_r1"]),
                    share(x["box_share"]),
                ]
            )
        )
    return out


def tune_text(r: dict[str, Any]) -> list[Any]:
    """The tune split's verdict, auto against whole over scenes and transforms together (what a default is
    chosen on), beside the eval split's."""
    o = r["overall_auto_vs_whole"]
    return [
        "",
        L(
            "overall",
            tune_n=str(o["tune"]["queries"]),
            tune_r1=delta(o["tune"]["recall_at_1"]),
            tune_map=delta(o["tune"]["map"]),
            eval_n=str(o["eval"]["queries"]),
            eval_r1=delta(o["eval"]["recall_at_1"]),
            eval_map=delta(o["eval"]["map"]),
        ),
    ]


def regions_section(r: dict[str, Any]) -> list[Msg | str | Row]:
    """The region-search part of the page."""
    return intro(r) + scene_table(r) + views_table(r) + transforms_table(r) + tune_text(r)
