"""The retrieval-quality part of the benchmarks page (from quality.json), in every language."""

from __future__ import annotations

from typing import Any

from bench.docs import TO_ROOT, Labels, Msg, Per, Row, Seq
from bench.features import variant_parts
from bench.report import pct
from bench.targets import int8_method

L = Labels.load("report_quality")


def ci(metrics: dict[str, Any], name: str) -> str:
    """'0.912 (0.88-0.94)': a metric and its 95% interval."""
    lo, hi = metrics[f"{name}_ci95"]
    return f"{metrics[name]:.3f} ({lo:.2f}-{hi:.2f})"


def delta(d: dict[str, Any]) -> str:
    """'+0.012 (-0.004..+0.029)': a paired difference and its 95% interval."""
    return f"{d['delta']:+.3f} ({d['ci95'][0]:+.3f}..{d['ci95'][1]:+.3f})"


def short_name(row: dict[str, Any]) -> str:
    """'EfficientNet-Lite0' of 'EfficientNet-Lite0, ImageNet weights (...)'."""
    return str(row["label"].split(",")[0])


def row_label(key: str, row: dict[str, Any]) -> Msg | str:
    """A row's label in every language (as measured when the label table does not name the row)."""
    return L(f"row_{key}") if f"row_{key}" in L.table else str(row["label"])


def intro(q: dict[str, Any]) -> list[Any]:
    """What the corpus, the split and the metrics are."""
    c, s = q["corpus"], q["split"]
    origins = Seq([L("origin", n=str(n), source=k) for k, n in sorted(c["origins"].items(), key=lambda kv: -kv[1])])
    kinds = c["gallery_kinds"]
    return [
        "",
        L("quality"),
        "",
        L(
            "intro",
            root=Per(TO_ROOT),
            photos=str(c["photos"]),
            origins=origins,
            gallery=str(c["gallery"]),
            gallery_photos=str(kinds.get("photo", 0)),
            crops=str(kinds.get("crop", 0)),
            queries=str(c["queries"]),
            transforms=str(len(c["transforms"])),
            tune_photos=str(s["tune_photos"]),
            tune_queries=str(s["tune_queries"]),
            eval_photos=str(s["eval_photos"]),
            eval_queries=str(s["eval_queries"]),
        ),
    ]


def backbone_table(q: dict[str, Any]) -> list[Any]:
    """One line per backbone in its recommended configuration (and the current default when it differs), pHash."""
    out: list[Any] = ["", L("backbone_head"), "|---|---|---:|---:|---:|---:|---:|---:|"]
    for key, row in q["rows"].items():
        pick = row["pick"]
        for name in dict.fromkeys([pick["recommended"], pick["current_default"]]):
            if name not in row["variants"]:
                continue
            o, th = row["variants"][name]["overall"], row["thresholds"].get(name)
            tag = "recommended" if name == pick["recommended"] else "current_default"
            if name == pick["recommended"] == pick["current_default"]:
                tag = "default"
            out.append(
                Row(
                    [
                        row_label(key, row),
                        L("configuration", name=name, tag=L(tag)),
                        ci(o, "recall_at_1"),
                        ci(o, "recall_at_10"),
                        ci(o, "map"),
                        *_thr(th),
                    ]
                )
            )
    ph = q["phash"]
    out.append(
        Row(
            [
                L("phash_row"),
                "-",
                ci(ph["overall"], "recall_at_1"),
                ci(ph["overall"], "recall_at_10"),
                ci(ph["overall"], "map"),
                *_thr(ph["thresholds"]),
            ]
        )
    )
    return out


def _thr(th: dict[str, Any] | None) -> list[str]:
    """Threshold cells: the score, the share of eval copies it keeps, the share of eval searches it would fool."""
    if not th:
        return ["n/a", "n/a", "n/a"]
    return [f"{th['threshold']:.3f}", pct(th["eval"]["copies_kept"]), pct(th["eval"]["nonmatch_share"])]


def variants_table(key: str, row: dict[str, Any]) -> list[Any]:
    """Every preprocessing variant of one backbone."""
    out: list[Any] = [
        "",
        L("variants_intro", label=row_label(key, row)),
        "",
        L("variants_head"),
        "|---|---:|---:|---:|---:|",
    ]
    rec, cur = row["pick"]["recommended"], row["pick"]["current_default"]
    for name, v in sorted(row["variants"].items(), key=lambda kv: -kv[1]["overall"]["map"]):
        label: Any = f"**{name}**" if name == rec else name
        label = L("variant_current", name=label) if name == cur else label
        out.append(
            Row(
                [
                    label,
                    ci(v["overall"], "recall_at_1"),
                    ci(v["overall"], "recall_at_10"),
                    ci(v["overall"], "map"),
                    f"{v['tune_map']:.3f}",
                ]
            )
        )
    return out


def changes(variant: str, reference: str) -> Seq:
    """'IMAGE_RESIZE center-crop -> squash, IMAGE_TRIM off -> on': the settings a variant changes."""
    return Seq(
        [
            L("change", setting=k, old=a, new=b)
            for k, a, b in zip(
                ("IMAGE_RESIZE", "MODEL_POOLING", "IMAGE_TRIM"),
                variant_parts(reference),
                variant_parts(variant),
                strict=True,
            )
            if a != b
        ]
    )


def choice_text(row: dict[str, Any]) -> list[Any]:
    """What was chosen for this backbone and why, from the numbers."""
    pick, rec, cur = row["pick"], row["pick"]["recommended"], row["pick"]["current_default"]
    vs = pick["recommended_vs"]
    close = [n for n in pick["equivalent_on_tune"] if n != pick["best_on_tune"]]
    verdict = (
        L("stays", name=cur)
        if rec == cur
        else L("changes_to", name=rec, changes=changes(rec, cur), delta=delta(vs[cur]), current=cur)
    )
    eval_best: Msg | str = ""
    if pick["best_on_eval"] != rec:
        eval_best = L("eval_best", name=pick["best_on_eval"], delta=delta(vs[pick["best_on_eval"]]))
    mode, pooling = rec.split("+")[:2]
    twin = rec.replace(f"+{pooling}", "+" + ("gem" if pooling == "avg" else "avg"))
    pooling_text: Msg | str = ""
    if twin in vs:
        pooling_text = L("pooling", pooling=pooling, other=twin.split("+")[1], delta=delta(vs[twin]))
    others = [n for n in vs if not n.startswith(mode + "+") and n.split("+")[1:] == rec.split("+")[1:]]
    return [
        "",
        L(
            "choice",
            short=short_name(row),
            best=pick["best_on_tune"],
            close=L("close", names=Seq(close, "names")) if close else L("none_close"),
            verdict=verdict,
            eval_best=eval_best,
            pooling=pooling_text,
            others=Seq([L("against", name=n, delta=delta(vs[n])) for n in others], "empty"),
        ),
    ]


def trim_text(row: dict[str, Any]) -> list[Any]:
    """Border trim on against off, on the tune split (the decision) and the eval split, and where it matters."""
    t = row.get("trim")
    if not t:
        return []
    d = t["per_transform_map_delta"]
    gains = [f"{k} {v:+.2f}" for k, v in sorted(d.items(), key=lambda kv: -kv[1]) if v >= 0.01]
    losses = [f"{k} {v:+.2f}" for k, v in sorted(d.items(), key=lambda kv: kv[1]) if v <= -0.01]
    return [
        "",
        L(
            "trim",
            short=short_name(row),
            on=t["on"],
            off=t["off"],
            tune=delta(t["map_delta_tune"]),
            eval=delta(t["map_delta"]),
            verdict=L("trim_wins" if t["wins_overall"] else "trim_loses"),
            gains=Seq(gains) if gains else L("none"),
            losses=Seq(losses) if losses else L("none"),
            pad_off=_cell(row, t["off"], "pad_white_canvas"),
            pad_on=_cell(row, t["on"], "pad_white_canvas"),
            shot_off=_cell(row, t["off"], "screenshot_border"),
            shot_on=_cell(row, t["on"], "screenshot_border"),
        ),
    ]


def _cell(row: dict[str, Any], variant: str, transform: str) -> str:
    """'recall@1 / mAP' of one variant on one transform."""
    x = row["variants"][variant]["per_transform"].get(transform)
    return "n/a" if x is None else f"{x['recall_at_1']:.2f} / {x['map']:.2f}"


def per_transform_table(q: dict[str, Any]) -> list[Any]:
    """recall@1 / mAP per transform: the main row's choices, INT8, the other backbones, pHash."""
    main = q["rows"][q["main_row"]]
    short = short_name(main)
    names = dict.fromkeys(
        [
            main["pick"]["recommended"],
            (main.get("trim") or {}).get("off"),
            (main.get("trim") or {}).get("on"),
            main["pick"]["current_default"],
        ]
    )
    cols: list[tuple[Any, dict[str, Any]]] = [
        (f"{short} {name}", main["variants"][name]["per_transform"]) for name in names if name in main["variants"]
    ]
    cols += [
        (Seq([short, main["pick"]["recommended"], precision_label(precision)], "words"), p["eval"]["per_transform"])
        for precision, p in main.get("precisions", {}).items()
    ]
    for key, row in q["rows"].items():
        if key != q["main_row"]:
            cols.append(
                (
                    Seq(
                        [
                            L("backbone_weights", short=short_name(row), weights=_weights(row)),
                            row["pick"]["recommended"],
                        ],
                        "after_paren",
                    ),
                    row["variants"][row["pick"]["recommended"]]["per_transform"],
                )
            )
    cols.append(("pHash", q["phash"]["per_transform"]))
    out: list[Any] = [
        "",
        L("per_transform_intro"),
        "",
        L("transform_head", columns=Seq([c for c, _ in cols], "cells")),
        "|---|" + "---:|" * len(cols),
    ]
    out += [
        Row([t, *(f"{x[t]['recall_at_1']:.2f} / {x[t]['map']:.2f}" for _, x in cols)])
        for t in q["corpus"]["transforms"]
    ]
    return out


def _weights(row: dict[str, Any]) -> str:
    """The weights' name as the tables show it."""
    return str(row["weights"])


def precision_text(q: dict[str, Any]) -> list[Any]:
    """INT8 (plain and --match-fp32) and bf16 against FP32 on the main row: cosine, retrieval, speed, threshold."""
    main = q["rows"][q["main_row"]]
    if not main.get("precisions") and not main.get("precisions_not_saved"):
        return []
    out: list[Any] = [
        "",
        L("precision_intro", short=short_name(main), name=main["pick"]["recommended"]),
        "",
        L("precision_head"),
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for precision, p in main.get("precisions", {}).items():
        c = p["cosine_to_fp32"]
        speed = f"{p['speed_vs_fp32']['ratio']:.2f}x" if "speed_vs_fp32" in p else "-"
        out.append(
            Row(
                [
                    f"{precision_label(precision)} ({p['precision_in_force']})",
                    p.get("space", "?"),
                    f"{c['min']:.4f} / {c['p1']:.4f} / {c['median']:.4f}",
                    delta(p["vs_fp32"]["recall_at_1"]),
                    delta(p["vs_fp32"]["map"]),
                    speed,
                    f"{p['threshold']['threshold']:.3f}",
                ]
            )
        )
    for name, p in main.get("precisions", {}).items():
        out += ["", precision_verdict(p, name)]
    for name, cal in main.get("precisions_not_saved", {}).items():
        out += [
            "",
            L(
                "not_saved",
                name=precision_label(name),
                held_out=str(cal["held_out"]),
                p1=f"{cal['cosine_p1']:.4f}",
                min=f"{cal['cosine_min']:.4f}",
                method=int8_method(cal),
            ),
        ]
    return out


def precision_label(precision: str) -> str:
    """How the report names a compared precision ("int8-match" is INT8 calibrated with --match-fp32)."""
    return {"int8": "INT8", "int8-match": "INT8 --match-fp32"}.get(precision, precision)


def not_worse(p: dict[str, Any], limit: float = 0.01) -> bool:
    """Whether recall@1 and mAP are at most `limit` below FP32's at 95% confidence (lower interval ends)."""
    return all(d["ci95"][0] >= -limit for d in p["vs_fp32"].values())


def precision_verdict(p: dict[str, Any], precision: str) -> Msg:
    """One paragraph: is this precision within noise of FP32 for retrieval, and does it share FP32's space?"""
    from model.fingerprint import SHARED_MIN, SHARED_P1  # noqa: PLC0415 - the service's gate for sharing a space

    c = p["cosine_to_fp32"]
    noise = L("not_worse") if not_worse(p) else L("maybe_worse")
    if precision.startswith("int8"):
        return int8_verdict(p, precision, noise)
    gate = c["p1"] >= SHARED_P1 and c["min"] >= SHARED_MIN
    return L(
        "other_precision",
        name=precision,
        noise=noise,
        p1=f"{c['p1']:.4f}",
        min=f"{c['min']:.4f}",
        gate_p1=f"{SHARED_P1}",
        gate_min=f"{SHARED_MIN}",
        gate=L("gate_met" if gate else "gate_missed"),
    )


def int8_verdict(p: dict[str, Any], precision: str, noise: Msg) -> Msg:
    """An INT8 paragraph: how it was calibrated, which layers stayed FP32, retrieval, speed, its space."""
    cal, c = p["calibration"], p["cosine_to_fp32"]
    kept = L("kept_layers", layers=Seq(cal["float_layers"])) if cal.get("float_layers") else ""
    held = (
        L("held", n=str(cal["held_out"]), p1=f"{cal['cosine_p1']:.4f}", min=f"{cal['cosine_min']:.4f}")
        if "held_out" in cal
        else ""
    )
    sp = p.get("speed_vs_fp32")
    speed = (
        L("int8_speed", ratio=f"{sp['ratio']:.2f}", got=f"{sp['img_per_s']:.0f}", base=f"{sp['fp32_img_per_s']:.0f}")
        if sp
        else ""
    )
    space = (
        L("shares_space") if cal.get("shares_fp32") else L("own_space", threshold=f"{p['threshold']['threshold']:.3f}")
    )
    recommend = L("recommended_for_speed") if not_worse(p) and precision == "int8" else L("full_stop")
    return L(
        "int8",
        name=precision_label(precision),
        images=str(cal["images"]),
        method=int8_method(cal),
        kept=kept,
        held=held,
        noise=noise,
        speed=speed,
        recommend=recommend,
        min=f"{c['min']:.4f}",
        p1=f"{c['p1']:.4f}",
        space=space,
    )


def thresholds_text(q: dict[str, Any]) -> list[Any]:
    """The duplicate thresholds to use as the engine's per-backbone defaults, and how they were measured."""
    out: list[Any] = [
        "",
        L("thresholds", copies=Seq(q["copy_transforms"], "names")),
        "",
        L("thresholds_head"),
        "|---|---|---|---:|---:|",
    ]
    for row in q["rows"].values():
        backbone = L("backbone_weights", short=short_name(row), weights=_weights(row))
        for name, th in row["thresholds"].items():
            out.append(Row([backbone, name, "fp32", f"{th['threshold']:.3f}", pct(th["nonmatch_share"])]))
        for precision, p in row.get("precisions", {}).items():
            out.append(
                Row(
                    [
                        backbone,
                        row["pick"]["recommended"],
                        precision,
                        f"{p['threshold']['threshold']:.3f}",
                        pct(p["threshold"]["nonmatch_share"]),
                    ]
                )
            )
    return out


def quality_section(q: dict[str, Any]) -> list[Any]:
    """The quality part of the page."""
    main = q["rows"][q["main_row"]]
    out = intro(q) + backbone_table(q)
    if any(r["weights"] == "random" for r in q["rows"].values()):
        out += ["", L("random_note")]
    out += variants_table(q["main_row"], main) + choice_text(main)
    for key, row in q["rows"].items():
        if key != q["main_row"] and len(row["variants"]) > 2:
            out += choice_text(row)
    out += trim_text(main) + per_transform_table(q) + precision_text(q) + thresholds_text(q)
    return out
