"""README.zh-CN.md is the whole README in Chinese: both name the same endpoints, settings and commands.

The translation is prose around the same facts. These checks compare the facts
(what a reader types or configures), so an endpoint, a setting or a command
added to one README and not the other fails the build instead of drifting.
The benchmark and reliability figures are no longer in the READMEs: they are generated
into docs/ in both languages at once, and tests/test_docs_figures.py checks them.
"""

from __future__ import annotations

import re

from conf.settings import Settings
from tests.conftest import ROOT

ENGLISH = (ROOT / "README.md").read_text(encoding="utf-8")
CHINESE = (ROOT / "README.zh-CN.md").read_text(encoding="utf-8")
SETTING_NAMES = {name.upper() for name in Settings.model_fields}
ENDPOINT = re.compile(r"(?<![A-Za-z.])/(?:api/image/sim/[a-z0-9_/|<>{}.-]+|health|ready|metrics|docs|console|openapi\.json)\b")
SETTING = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")


def endpoints(text: str) -> set[str]:
    """Every endpoint path the text mentions (trailing punctuation trimmed)."""
    return {match.rstrip("./|") for match in ENDPOINT.findall(text)}


def settings(text: str) -> set[str]:
    """Every imgsim setting the text mentions by its environment-variable name."""
    return set(SETTING.findall(text)) & SETTING_NAMES


def commands(text: str) -> list[str]:
    """The lines of the shell code blocks, in order: what a reader copies and runs."""
    blocks = re.findall(r"```(?:sh|bash|shell)\n(.*?)```", text, flags=re.S)
    return [line.split("  #")[0].rstrip() for block in blocks for line in block.splitlines() if line.strip()
            and not line.lstrip().startswith("#")]


def test_each_readme_links_to_the_other_at_the_top() -> None:
    assert "README.zh-CN.md" in "\n".join(ENGLISH.splitlines()[:8])
    assert "README.md" in "\n".join(CHINESE.splitlines()[:8])


def test_the_chinese_readme_is_chinese() -> None:
    han = len(re.findall(r"[\u4e00-\u9fff]", CHINESE))
    assert han > 2000, f"README.zh-CN.md has only {han} Chinese characters; it should be the whole README"


def test_both_name_the_same_endpoints() -> None:
    assert endpoints(ENGLISH), "the endpoint pattern found nothing: the check would pass vacuously"
    assert endpoints(CHINESE) == endpoints(ENGLISH)


def test_both_name_the_same_settings() -> None:
    assert len(settings(ENGLISH)) > 20
    assert settings(CHINESE) == settings(ENGLISH)


def test_both_show_the_same_commands() -> None:
    assert commands(ENGLISH), "no shell blocks found: the check would pass vacuously"
    assert commands(CHINESE) == commands(ENGLISH)
