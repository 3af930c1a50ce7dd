"""The retrieval-quality part of the README's Benchmarks section (from quality.json)."""

from __future__ import annotations

from typing import Any

from bench.features import variant_parts
from bench.report import pct
from bench.targets import int8_method


def ci(metrics: dict[str, Any], name: str) -> str:
    """'0.912 (0.88-0.94)': a metric and its 95% interval."""
    lo, hi = metrics[f"{name}_ci95"]
    return f"{metrics[name]:.3f} ({lo:.2f}-{hi:.2f})"


def delta(d: dict[str, Any]) -> str:
    """'+0.012 (-0.004..+0.029)': a paired difference and its 95% interval."""
    return f"{d['delta']:+.3f} ({d['ci95'][0]:+.3f}..{d['ci95'][1]:+.3f})"


def intro(q: dict[str, Any]) -> list[str]:
    """What the corpus, the split and the metrics are."""
    c, s = q["corpus"], q["split"]
    origins = ", ".join(f"{n} from {k}" for k, n in sorted(c["origins"].items(), key=lambda kv: -kv[1]))
    kinds = c["gallery_kinds"]
    return ["", "### Retrieval quality", "",
            f"Corpus ([bench/corpus.py](bench/corpus.py)): {c['photos']} distinct real photos ({origins}); a gallery "
            f"of {c['gallery']} images ({kinds.get('photo', 0)} photos + {kinds.get('crop', 0)} non-overlapping "
            f"tiles of them as hard distractors); {c['queries']} queries ({len(c['transforms'])} transforms of every "
            "photo). The photos are split by a hash of their id: the **tune** split "
            f"({s['tune_photos']} photos, {s['tune_queries']} queries) is where the defaults, the duplicate threshold "
            "and the INT8 calibration images are chosen; every figure below is on the **eval** split "
            f"({s['eval_photos']} photos, {s['eval_queries']} queries), which nothing was tuned on. mAP = mean "
            "reciprocal rank (one true match per query); overall = mean over transforms; intervals are 95% bootstrap "
            "intervals over eval photos."]


def backbone_table(q: dict[str, Any]) -> list[str]:
    """One line per backbone in its recommended configuration (and the current default when it differs), pHash."""
    out = ["", "| backbone | configuration | recall@1 | recall@10 | mAP | duplicate threshold | copies kept (eval) | "
           "searches with an unrelated image above it |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in q["rows"].values():
        pick = row["pick"]
        for name in dict.fromkeys([pick["recommended"], pick["current_default"]]):
            if name not in row["variants"]:
                continue
            o, th = row["variants"][name]["overall"], row["thresholds"].get(name)
            tag = "recommended" if name == pick["recommended"] else "current default"
            if name == pick["recommended"] == pick["current_default"]:
                tag = "default"
            out.append(f"| {row['label']} | {name} ({tag}) | {ci(o, 'recall_at_1')} | {ci(o, 'recall_at_10')} | "
                       f"{ci(o, 'map')} | {_thr(th)} |")
    ph = q["phash"]
    out.append(f"| pHash (imagehash, 64 bit) | - | {ci(ph['overall'], 'recall_at_1')} | "
               f"{ci(ph['overall'], 'recall_at_10')} | {ci(ph['overall'], 'map')} | {_thr(ph['thresholds'])} |")
    return out


def _thr(th: dict[str, Any] | None) -> str:
    """Threshold cells: the score, the share of eval copies it keeps, the share of eval searches it would fool."""
    if not th:
        return "n/a | n/a | n/a"
    return f"{th['threshold']:.3f} | {pct(th['eval']['copies_kept'])} | {pct(th['eval']['nonmatch_share'])}"


def variants_table(row: dict[str, Any]) -> list[str]:
    """Every preprocessing variant of one backbone."""
    out = ["", f"Every variant of {row['label']} (IMAGE_RESIZE + MODEL_POOLING, `+trim` = IMAGE_TRIM=on):", "",
           "| variant | recall@1 | recall@10 | mAP | mAP on the tune split |", "|---|---:|---:|---:|---:|"]
    rec, cur = row["pick"]["recommended"], row["pick"]["current_default"]
    for name, v in sorted(row["variants"].items(), key=lambda kv: -kv[1]["overall"]["map"]):
        label = f"**{name}**" if name == rec else name
        label += " (current default)" if name == cur else ""
        out.append(f"| {label} | {ci(v['overall'], 'recall_at_1')} | {ci(v['overall'], 'recall_at_10')} | "
                   f"{ci(v['overall'], 'map')} | {v['tune_map']:.3f} |")
    return out


def changes(variant: str, reference: str) -> str:
    """'IMAGE_RESIZE center-crop -> squash, IMAGE_TRIM off -> on': the settings a variant changes."""
    return ", ".join(f"{k} {a} -> {b}" for k, a, b in zip(("IMAGE_RESIZE", "MODEL_POOLING", "IMAGE_TRIM"),
                                                            variant_parts(reference), variant_parts(variant),
                                                            strict=True) if a != b)


def choice_text(row: dict[str, Any]) -> list[str]:
    """What was chosen for this backbone and why, from the numbers."""
    pick, rec, cur = row["pick"], row["pick"]["recommended"], row["pick"]["current_default"]
    vs, short = pick["recommended_vs"], row["label"].split(",")[0]
    close = [n for n in pick["equivalent_on_tune"] if n != pick["best_on_tune"]]
    text = (f"**Defaults for {short}, decided on the tune split.** Best there: {pick['best_on_tune']}; "
            + (f"not distinguishable from it there (95% interval of the mAP difference reaching zero): "
               f"{', '.join(close)}. " if close else "every other variant is worse there beyond noise. ")
            + "Of these, the one that changes the fewest settings from the current default is recommended, so that "
            "a setting changes only where the data says it matters: ")
    if rec == cur:
        text += f"**{cur} stays**."
    else:
        text += (f"**{rec}** ({changes(rec, cur)}). On the eval split it is {delta(vs[cur])} mAP against the "
                 f"current default {cur}.")
    if pick["best_on_eval"] != rec:
        text += f" The best on the eval split, {pick['best_on_eval']}, is {delta(vs[pick['best_on_eval']])} from it."
    mode, pooling = rec.split("+")[:2]
    twin = rec.replace(f"+{pooling}", "+" + ("gem" if pooling == "avg" else "avg"))
    if twin in vs:
        text += f" {pooling} against {twin.split('+')[1]} pooling (eval): {delta(vs[twin])} mAP."
    others = [n for n in vs if not n.startswith(mode + "+") and n.split("+")[1:] == rec.split("+")[1:]]
    text += "".join(f" Against {n}: {delta(vs[n])}." for n in others)
    return ["", text]


def trim_text(row: dict[str, Any]) -> list[str]:
    """Border trim on against off, on the tune split (the decision) and the eval split, and where it matters."""
    t = row.get("trim")
    if not t:
        return []
    d = t["per_transform_map_delta"]
    gains = ", ".join(f"{k} {v:+.2f}" for k, v in sorted(d.items(), key=lambda kv: -kv[1]) if v >= 0.01)
    losses = ", ".join(f"{k} {v:+.2f}" for k, v in sorted(d.items(), key=lambda kv: kv[1]) if v <= -0.01)
    verdict = ("it wins overall on the tune split, so IMAGE_TRIM=on is recommended" if t["wins_overall"] else
               "it does not win overall on the tune split, so IMAGE_TRIM stays off")
    return ["", f"**Border trim ({row['label'].split(',')[0]}).** {t['on']} against {t['off']}: "
            f"{delta(t['map_delta_tune'])} mAP on the tune split, {delta(t['map_delta'])} on the eval split; "
            f"{verdict}. Per transform (eval mAP): gains {gains or 'none'}; losses {losses or 'none'}. "
            f"pad_white_canvas: {_cell(row, t['off'], 'pad_white_canvas')} without trim, "
            f"{_cell(row, t['on'], 'pad_white_canvas')} with; screenshot_border: "
            f"{_cell(row, t['off'], 'screenshot_border')} without, {_cell(row, t['on'], 'screenshot_border')} with "
            "(recall@1 / mAP)."]


def _cell(row: dict[str, Any], variant: str, transform: str) -> str:
    """'recall@1 / mAP' of one variant on one transform."""
    x = row["variants"][variant]["per_transform"].get(transform)
    return "n/a" if x is None else f"{x['recall_at_1']:.2f} / {x['map']:.2f}"


def per_transform_table(q: dict[str, Any]) -> list[str]:
    """recall@1 / mAP per transform: the main row's choices, INT8, the other backbones, pHash."""
    main = q["rows"][q["main_row"]]
    cols: list[tuple[str, dict[str, Any]]] = []
    short = main["label"].split(",")[0]
    for name in dict.fromkeys([main["pick"]["recommended"], (main.get("trim") or {}).get("off"),
                               (main.get("trim") or {}).get("on"), main["pick"]["current_default"]]):
        if name in main["variants"]:
            cols.append((f"{short} {name}", main["variants"][name]["per_transform"]))
    for precision, p in main.get("precisions", {}).items():
        cols.append((f"{short} {main['pick']['recommended']} {precision_label(precision)}", p["eval"]["per_transform"]))
    for key, row in q["rows"].items():
        if key != q["main_row"]:
            cols.append((f"{row['label'].split(',')[0]} ({row['weights']}) {row['pick']['recommended']}",
                         row["variants"][row["pick"]["recommended"]]["per_transform"]))
    cols.append(("pHash", q["phash"]["per_transform"]))
    out = ["", "Per transform, recall@1 / mAP (eval split):", "",
           "| transform | " + " | ".join(c for c, _ in cols) + " |", "|---|" + "---:|" * len(cols)]
    for t in q["corpus"]["transforms"]:
        out.append(f"| {t} | " + " | ".join(f"{x[t]['recall_at_1']:.2f} / {x[t]['map']:.2f}" for _, x in cols) + " |")
    return out


def precision_text(q: dict[str, Any]) -> list[str]:
    """INT8 (plain and --match-fp32) and bf16 against FP32 on the main row: cosine, retrieval, speed, threshold."""
    main = q["rows"][q["main_row"]]
    if not main.get("precisions") and not main.get("precisions_not_saved"):
        return []
    out = ["", f"Lower precisions against FP32, {main['label'].split(',')[0]} {main['pick']['recommended']} (the "
           "service's own INT8 / bf16 engines; cosine of the same image over gallery and queries; recall@1 and mAP "
           "of an index of that precision searched with queries of that precision, eval split; INT8 speed over "
           "OpenVINO FP32 at batch 32, interleaved in the same run):", "",
           "| precision (in force) | embedding space | cosine min / 1st pct / median | recall@1 vs FP32 | mAP vs FP32 | "
           "speed vs FP32 | duplicate threshold |", "|---|---|---:|---:|---:|---:|---:|"]
    for precision, p in main.get("precisions", {}).items():
        c = p["cosine_to_fp32"]
        speed = f"{p['speed_vs_fp32']['ratio']:.2f}x" if "speed_vs_fp32" in p else "-"
        out.append(f"| {precision_label(precision)} ({p['precision_in_force']}) | {p.get('space', '?')} | "
                   f"{c['min']:.4f} / {c['p1']:.4f} / {c['median']:.4f} | {delta(p['vs_fp32']['recall_at_1'])} | "
                   f"{delta(p['vs_fp32']['map'])} | {speed} | {p['threshold']['threshold']:.3f} |")
    for name, p in main.get("precisions", {}).items():
        out += ["", precision_verdict(p, name)]
    for name, cal in main.get("precisions_not_saved", {}).items():
        out += ["", f"**{precision_label(name)}** was not saved: on the {cal['held_out']} tune-split images held out "
                f"from its calibration it reached cosine 1st percentile {cal['cosine_p1']:.4f}, min "
                f"{cal['cosine_min']:.4f} with {int8_method(cal)}, short of the gate."]
    return out


def precision_label(precision: str) -> str:
    """How the report names a compared precision ("int8-match" is INT8 calibrated with --match-fp32)."""
    return {"int8": "INT8", "int8-match": "INT8 --match-fp32"}.get(precision, precision)


def not_worse(p: dict[str, Any], limit: float = 0.01) -> bool:
    """Whether recall@1 and mAP are at most `limit` below FP32's at 95% confidence (lower interval ends)."""
    return all(d["ci95"][0] >= -limit for d in p["vs_fp32"].values())


def precision_verdict(p: dict[str, Any], precision: str) -> str:
    """One paragraph: is this precision within noise of FP32 for retrieval, and does it share FP32's space?"""
    from model.fingerprint import SHARED_MIN, SHARED_P1  # noqa: PLC0415 - the service's gate for sharing a space

    c = p["cosine_to_fp32"]
    noise = ("not measurably worse than FP32 for retrieval (the 95% intervals of its recall@1 and mAP differences "
             "end above -0.01)" if not_worse(p) else
             "possibly worse than FP32 for retrieval (an interval of its recall@1 or mAP difference reaches below "
             "-0.01)")
    if precision.startswith("int8"):
        return int8_verdict(p, precision, noise)
    gate = c["p1"] >= SHARED_P1 and c["min"] >= SHARED_MIN
    return (f"**{precision}** is {noise}. Same-image cosine to FP32: 1st percentile {c['p1']:.4f}, min {c['min']:.4f}, "
            f"against the gate for sharing FP32's embedding space (1st percentile >= {SHARED_P1}, min >= "
            f"{SHARED_MIN}): {'met' if gate else 'not met, so its vectors need a collection of their own'}.")


def int8_verdict(p: dict[str, Any], precision: str, noise: str) -> str:
    """An INT8 paragraph: how it was calibrated, which layers stayed FP32, retrieval, speed, its space."""
    cal, c = p["calibration"], p["cosine_to_fp32"]
    kept = f": {', '.join(cal['float_layers'])}" if cal.get("float_layers") else ""
    held = (f"; on the {cal['held_out']} of them held out from calibration: 1st percentile {cal['cosine_p1']:.4f}, "
            f"min {cal['cosine_min']:.4f}" if "held_out" in cal else "")
    speed = (f", {p['speed_vs_fp32']['ratio']:.2f}x OpenVINO FP32 at batch 32 ({p['speed_vs_fp32']['img_per_s']:.0f} "
             f"vs {p['speed_vs_fp32']['fp32_img_per_s']:.0f} img/s)" if "speed_vs_fp32" in p else "")
    space = ("It shares FP32's embedding space (it met the gate on its held-out images), so it serves FP32 "
             "collections without re-embedding." if cal.get("shares_fp32") else
             "An INT8 model is an embedding space of its own, with its own duplicate "
             f"threshold ({p['threshold']['threshold']:.3f}).")
    return (f"**{precision_label(precision)}** (calibrated on {cal['images']} gallery images of the tune split, never "
            f"on eval photos, with {int8_method(cal)}{kept}{held}) is {noise}{speed}"
            + ("; it is recommended where speed matters. " if not_worse(p) and precision == "int8" else ". ")
            + f"Same-image cosine to FP32 over the benchmark: min {c['min']:.4f}, 1st percentile {c['p1']:.4f}. "
            + space)


def thresholds_text(q: dict[str, Any]) -> list[str]:
    """The duplicate thresholds to use as the engine's per-backbone defaults, and how they were measured."""
    copies = ", ".join(q["copy_transforms"])
    out = ["", f"**Duplicate thresholds.** The score that keeps 95% of true copies ({copies}) of the tune split's "
           "photos, and, for every search of the split, whether its best image made from another photo scores above "
           "it. Measured on the tune split only; the eval columns above show how they hold on photos they were not "
           "chosen on.", "", "| backbone | configuration | precision | threshold | searches with an unrelated image "
           "above it (tune) |", "|---|---|---|---:|---:|"]
    for row in q["rows"].values():
        for name, th in row["thresholds"].items():
            out.append(f"| {row['label'].split(',')[0]} ({row['weights']}) | {name} | fp32 | {th['threshold']:.3f} | "
                       f"{pct(th['nonmatch_share'])} |")
        for precision, p in row.get("precisions", {}).items():
            out.append(f"| {row['label'].split(',')[0]} ({row['weights']}) | {row['pick']['recommended']} | "
                       f"{precision} | {p['threshold']['threshold']:.3f} | {pct(p['threshold']['nonmatch_share'])} |")
    return out


def quality_section(q: dict[str, Any]) -> list[str]:
    """The quality part of the README section."""
    main = q["rows"][q["main_row"]]
    out = intro(q) + backbone_table(q)
    if any(r["weights"] == "random" for r in q["rows"].values()):
        out += ["", "> The ResNet50 row has **random weights** (its ImageNet file cannot be downloaded here): it only "
                "shows what preprocessing does to random convolutional features, not how well ResNet50 finds "
                "products. With the file in MODEL_CACHE_DIR (or MODEL_WEIGHTS=/path), `make bench` measures it too."]
    out += variants_table(main) + choice_text(main)
    for key, row in q["rows"].items():
        if key != q["main_row"] and len(row["variants"]) > 2:
            out += choice_text(row)
    out += trim_text(main) + per_transform_table(q) + precision_text(q) + thresholds_text(q)
    return out
