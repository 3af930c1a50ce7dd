"""The re-embedding part of the benchmarks page (from reembed.json), in every language: what a gallery
re-embedded from each kind of kept source loses, what each kind costs on disk, and the kept source chosen."""

from __future__ import annotations

from typing import Any

from bench.docs import Labels, Msg, Row, Seq
from bench.report import fmt, pct
from bench.report_quality import ci

L = Labels.load("report_reembed")


def loss(d: dict[str, Any]) -> str:
    """'+0.0041 (-0.0012..+0.0094)': a loss against the original (positive = lost) and its 95% interval."""
    return f"{d['delta']:+.4f} ({d['ci95'][0]:+.4f}..{d['ci95'][1]:+.4f})"


def kind_name(key: str) -> Msg | str:
    """`original` and `thumbnail` in words; a candidate by its key ('jpeg-512-q90')."""
    return L(f"kind_{key}") if f"kind_{key}" in L.table else f"`{key}`"


def settings_cell(k: dict[str, Any]) -> Msg | str:
    """'JPEG, 512 px, q90' (or the original file)."""
    if "side" not in k:
        return L("original_file")
    return L("settings", format=k["format"], side=str(k["side"]), quality=str(k["quality"]))


def kinds_table(r: dict[str, Any]) -> list[Any]:
    """What each kind of kept file costs: bytes, disk per 100,000 images, time to make, images made smaller."""
    out: list[Any] = ["", L("kinds_head"), "|---|---|---:|---:|---:|---:|"]
    for key, k in r["kinds"].items():
        out.append(
            Row(
                [
                    kind_name(key),
                    settings_cell(k),
                    f"{k['bytes_mean'] / 1000:.1f} / {k['bytes_median'] / 1000:.1f}",
                    f"{k['per_100k_gb']:.2f} / {k['per_100k_disk_gb']:.2f}",
                    fmt(k["encode_ms_median"], 1) if k["encode_ms_median"] is not None else "-",
                    pct(k["downscaled_share"]) if k["downscaled_share"] is not None else "-",
                ]
            )
        )
    return out


def model_table(key: str, row: dict[str, Any]) -> list[Any]:
    """One model: each kind's overall recall@1 and mAP, its loss against the original, its cosine to it."""
    out: list[Any] = [
        "",
        L(
            "model_intro",
            label=L(f"row_{key}") if f"row_{key}" in L.table else row["label"],
            config=row["configuration"],
            precision=row["precision"],
            threshold=f"{next(iter(row['kinds'].values()))['cosine_to_original']['duplicate_default']:.3f}",
        ),
        "",
        L("model_head"),
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for kind, k in row["kinds"].items():
        o, c = k["eval"]["overall"], k["cosine_to_original"]
        out.append(
            Row(
                [
                    kind_name(kind),
                    ci(o, "recall_at_1"),
                    ci(o, "map"),
                    loss(k["loss_recall_at_1"]),
                    loss(k["loss_map"]),
                    f"{c['min']:.4f} / {c['p1']:.4f} / {c['median']:.4f}",
                    f"{c['below_duplicate_default'] * 100:.1f}%",
                ]
            )
        )
    return out


def transform_table(key: str, row: dict[str, Any], transforms: list[str]) -> list[Any]:
    """One model: recall@1 / mAP per transform and kind."""
    kinds = list(row["kinds"])
    out: list[Any] = [
        "",
        L("transform_intro", label=L(f"short_{key}") if f"short_{key}" in L.table else key),
        "",
        L("transform_head", columns=Seq([kind_name(k) for k in kinds], "cells")),
        "|---|" + "---:|" * len(kinds),
    ]
    for t in transforms:
        cells = []
        for k in kinds:
            x = row["kinds"][k]["eval"]["per_transform"][t]
            cells.append(f"{x['recall_at_1']:.3f} / {x['map']:.3f}")
        out.append(Row([t, *cells]))
    return out


def _losses(check: dict[str, dict[str, Any]]) -> Seq:
    """'EfficientNet-Lite0 +0.0035 (95%: up to +0.0129), ...': each model's loss and its interval's upper end."""
    return Seq(
        [
            L("loss_of", model=L(f"short_{m}"), loss=f"{c['loss']:+.4f}", upper=f"{c['loss_upper']:+.4f}")
            for m, c in check.items()
        ],
        "list",
    )


def _reasons(check: dict[str, dict[str, Any]], rows: dict[str, Any], kind: str, r: dict[str, Any] | None = None) -> Seq:
    """Why a kind fails the rule: each model's loss bound over the bar, its vectors leaving the threshold, or (with
    the whole result `r`) its side below the region side."""
    out: list[Any] = []
    side, needed = (r["kinds"][kind].get("side"), r["decision"].get("region_side")) if r else (None, None)
    if side and needed and side < needed:
        out.append(L("reason_side", side=str(side), region_side=str(needed)))
    for m, c in check.items():
        if not c["within_bar"]:
            out.append(L("reason_loss", model=L(f"short_{m}"), upper=f"{c['loss_upper']:+.4f}"))
        if not c["stays_duplicate"]:
            cos = rows[m]["kinds"][kind]["cosine_to_original"]
            out.append(
                L(
                    "reason_cos",
                    model=L(f"short_{m}"),
                    min=f"{cos['min']:.3f}",
                    threshold=f"{cos['duplicate_default']:.3f}",
                    share=f"{cos['below_duplicate_default'] * 100:.1f}%",
                )
            )
    return Seq(out, "clauses")


def decision_text(r: dict[str, Any]) -> list[Any]:
    """The rule, today's thumbnail against it, the candidates within the bar that it rejects, the choice."""
    d, rows = r["decision"], r["rows"]
    checks = d["checks"]
    out: list[Any] = ["", L("rule", bar=f"{d['bar']:.3f}", side=str(d.get("region_side", ""))), ""]
    if "thumbnail" in checks:
        thumb = checks["thumbnail"]
        if d["thumbnail_passes"]:
            out += [L("thumb_pass", losses=_losses(thumb)), ""]
        else:
            out += [L("thumb_fail", losses=_losses(thumb), reasons=_reasons(thumb, rows, "thumbnail")), ""]
    rejected = [k for k in d["point_within_bar"] if k != "thumbnail" and k not in d["meet_rule"]]
    if rejected:
        items = [L("rejected_item", kind=kind_name(k), reasons=_reasons(checks[k], rows, k, r)) for k in rejected]
        out += [L("rejected", items=Seq(items, "clauses")), ""]
    if d.get("too_small"):
        small = [kind_name(k) for k in d["too_small"]]
        out += [L("too_small", kinds=Seq(small, "names"), side=str(d["region_side"])), ""]
    if d["chosen"] is None:
        out.append(L("none_within", bar=f"{d['bar']:.3f}"))
        return out
    others = [kind_name(k) for k in d["meet_rule"] if k != d["chosen"]]
    out.append(
        L(
            "chosen",
            kind=kind_name(d["chosen"]),
            losses=_losses(checks[d["chosen"]]),
            others=Seq(others, "names") if others else L("no_others"),
            gb=f"{d['per_100k_gb']:.2f}",
            disk=f"{d['per_100k_disk_gb']:.2f}",
            format=str(d["source_format"]),
            side=str(d["source_side"]),
            quality=str(d["source_quality"]),
            kb=f"{r['kinds'][d['chosen']]['bytes_mean'] / 1000:.1f}",
            thumb_kb=f"{r['kinds']['thumbnail']['bytes_mean'] / 1000:.1f}" if "thumbnail" in r["kinds"] else "n/a",
        )
    )
    return out


def reembed_section(r: dict[str, Any]) -> list[Any]:
    """The whole re-embedding part: intro, the kinds' costs, a table per model, per transform, the decision."""
    c, ds = r["corpus"], r["decoded_long_side"]
    out: list[Any] = [
        "",
        L("title"),
        "",
        L(
            "intro",
            gallery=str(c["gallery"]),
            photos=str(c["photos"]),
            queries=str(c["eval_queries"]),
            eval_photos=str(c["eval_photos"]),
            transforms=str(len(c["transforms"])),
            median=str(ds["median"]),
            p90=str(ds["p90"]),
            max=str(ds["max"]),
        ),
        "",
        # The WEBP effort the run encoded with (the thumbnail's, which the WEBP candidates share).
        L("kinds_intro", method=str(r["kinds"]["thumbnail"]["webp_method"])),
    ]
    out += kinds_table(r)
    for key, row in r["rows"].items():
        out += model_table(key, row)
    out += decision_text(r)
    for key, row in r["rows"].items():
        out += transform_table(key, row, c["transforms"])
    out += [
        "",
        L(
            "notes",
            date=str(r["date"]),
            cpus=str(r["cpus"]),
            load0=f"{r['loadavg_before'][0]:.1f}",
            load1=f"{r['loadavg_after'][0]:.1f}",
            minutes=f"{r['seconds'] / 60:.1f}",
        ),
    ]
    return out
