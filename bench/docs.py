"""The figures pages under docs/ (benchmarks, reliability), each generated in English and Chinese by one renderer.

A renderer builds its generated part once, as lines of `Msg` (a sentence or a table cell named in a label table
with an `en` and a `zh` template), `Seq` (a list joined the way each language joins lists) and `Row` (a table
row). Every number is formatted once, into the arguments of those, so both languages carry the same figures;
`render` then writes the same lines in each language. The prose around the generated part is written by hand in
each page, and `replace_between` swaps only what sits between the page's markers.

Committed data: docs/data/ (what the pages are rendered from). Raw results of runs: results/ (git-ignored),
copied into docs/data only by `make bench` or `make docs`.
"""

from __future__ import annotations

import shutil
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DATA = DOCS / "data"
IMG = DOCS / "img"
RESULTS = ROOT / "results"  # git-ignored: what runs write
LABELS = Path(__file__).with_name("labels")

Lang = Literal["en", "zh"]
LANGS: tuple[Lang, ...] = ("en", "zh")
# How a page of each language reaches the repository root and docs/ (the Chinese pages sit in docs/zh-CN/).
TO_ROOT: dict[Lang, str] = {"en": "../", "zh": "../../"}
TO_DOCS: dict[Lang, str] = {"en": "", "zh": "../"}
SEPARATORS: dict[str, dict[Lang, str]] = {
    "list": {"en": ", ", "zh": "，"},
    "names": {"en": ", ", "zh": "、"},
    "clauses": {"en": "; ", "zh": "；"},
    "cells": {"en": " | ", "zh": " | "},
    "words": {"en": " ", "zh": " "},
    "after_paren": {"en": " ", "zh": ""},
    "empty": {"en": "", "zh": ""},
}
CJK_FONT = "WenQuanYi Micro Hei"  # Debian's fonts-wqy-microhei, installed by `make browser`


PAGES = {"bench": "benchmarks.md", "reliability": "reliability.md"}  # the kind of generated part -> its page


def page(kind: str, lang: Lang) -> Path:
    """The page of a kind of generated part: docs/<page> in English, docs/zh-CN/<page> in Chinese."""
    return DOCS / PAGES[kind] if lang == "en" else DOCS / "zh-CN" / PAGES[kind]


@dataclass(frozen=True)
class Msg:
    """A sentence or cell: the template `key` of `labels`, filled with `args` (strings, Msg, Seq or Row)."""

    labels: Mapping[str, Mapping[Lang, str]]
    key: str
    args: Mapping[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return True


@dataclass(frozen=True)
class Seq:
    """Parts joined with a separator of SEPARATORS (", " in English, "，" or "、" in Chinese)."""

    parts: Sequence[Any]
    sep: str = "list"


@dataclass(frozen=True)
class Row:
    """A Markdown table row of cells."""

    cells: Sequence[Any]


class Per(dict[Lang, str]):
    """A value that differs by language but carries no figure, such as a relative link."""


class Labels:
    """A label table: `labels("key", x="1.0")` is the Msg of that key. Keys are checked at once."""

    @classmethod
    def load(cls, name: str) -> Labels:
        """The label table of bench/labels/<name>.toml: the translatable words of one renderer, kept apart from
        its code so that a translator edits one file (each key's `en` and `zh` template)."""
        return cls(tomllib.loads((LABELS / f"{name}.toml").read_text("utf-8")))

    def __init__(self, table: Mapping[str, Mapping[Lang, str]]) -> None:
        missing = [k for k, v in table.items() if set(v) != set(LANGS)]
        if missing:
            raise ValueError(f"labels without both an en and a zh entry: {missing}")
        self.table = table

    def __call__(self, name: str, /, **args: Any) -> Msg:
        if name not in self.table:
            raise KeyError(f"no label {name!r}")
        return Msg(self.table, name, args)


def render(item: Any, lang: Lang) -> str:
    """One line (or cell) in `lang`."""
    if isinstance(item, Per):
        return item[lang]
    if isinstance(item, str):
        return item
    if isinstance(item, Msg):
        return item.labels[item.key][lang].format(**{k: render(v, lang) for k, v in item.args.items()})
    if isinstance(item, Seq):
        return SEPARATORS[item.sep][lang].join(render(p, lang) for p in item.parts)
    if isinstance(item, Row):
        return "| " + " | ".join(render(c, lang) for c in item.cells) + " |"
    if isinstance(item, (int, float)):
        raise TypeError(f"format the number {item!r} before it goes into a page")
    raise TypeError(f"cannot render {type(item).__name__}")


def render_lines(lines: Iterable[Any], lang: Lang) -> str:
    """The generated part in `lang`: one rendered item a line."""
    return "\n".join(render(line, lang) for line in lines)


def markers(kind: str) -> tuple[str, str]:
    """The comments a page's generated part sits between."""
    return f"<!-- {kind}:start -->", f"<!-- {kind}:end -->"


def replace_between(text: str, kind: str, generated: str) -> str:
    """`text` with what sits between `kind`'s markers replaced by `generated` (the markers must be there)."""
    start, end = markers(kind)
    if start not in text or end not in text:
        raise RuntimeError(f"the page has no {start} ... {end} markers")
    head, rest = text.split(start, 1)
    _old, tail = rest.split(end, 1)
    return f"{head}{start}\n{generated}\n{end}{tail}"


def between(text: str, kind: str) -> str:
    """What sits between `kind`'s markers of `text`."""
    start, end = markers(kind)
    return text.split(start, 1)[1].split(end, 1)[0].strip("\n")


def write_pages(kind: str, lines: Sequence[Any], pages: Mapping[Lang, Path] | None = None) -> list[Path]:
    """Rewrite the generated part of `kind`'s page in every language; return the pages that changed."""
    changed = []
    for lang in LANGS:
        path = (pages or {}).get(lang) or page(kind, lang)
        text = path.read_text(encoding="utf-8")
        new = replace_between(text, kind, render_lines(lines, lang))
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


def take_results(source: Path, target: Path, names: Iterable[str]) -> list[str]:
    """Copy the results files `names` that a run left in `source` (git-ignored) into `target` (committed)."""
    taken = []
    for name in names:
        if (source / name).is_file():
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / name, target / name)
            taken.append(name)
    return taken


def cjk_font() -> str:
    """The CJK font's family name for the Chinese charts, or a RuntimeError saying how to install it."""
    from matplotlib import font_manager  # noqa: PLC0415 - matplotlib only where a chart is drawn

    try:
        font_manager.findfont(font_manager.FontProperties(family=CJK_FONT), fallback_to_default=False)
    except ValueError as exc:
        raise RuntimeError(
            f"the Chinese chart needs the font {CJK_FONT!r} (Debian: apt-get install "
            "fonts-wqy-microhei, which `make browser` does as root); matplotlib found none"
        ) from exc
    return CJK_FONT
