"""Named answer-extraction filters, registered by name like lm-eval-harness's.

A task YAML lists filter pipelines; each step names a registered filter and gives its
constructor arguments as keys. A filter maps a string to a string and never raises on a
non-match: it returns its ``fallback`` (``[invalid]``) instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from quantswarm.errors import ConfigError

INVALID = "[invalid]"


class Filter:
    """One extraction step: ``apply(text) -> text``."""

    def apply(self, text: str) -> str:
        raise NotImplementedError


FILTERS: dict[str, type[Filter]] = {}


def register_filter(name: str) -> Callable[[type[Filter]], type[Filter]]:
    def deco(cls: type[Filter]) -> type[Filter]:
        if name in FILTERS:
            raise ValueError(f"filter {name!r} registered twice")
        if not issubclass(cls, Filter):
            raise TypeError(f"{cls.__name__} is not a Filter")
        FILTERS[name] = cls
        return cls

    return deco


def get_filter(name: str, **kwargs) -> Filter:
    if name not in FILTERS:
        raise ConfigError(f"unknown filter {name!r}. Available: {', '.join(sorted(FILTERS))}")
    try:
        return FILTERS[name](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"filter {name!r}: bad arguments {sorted(kwargs)} ({exc})") from None


@register_filter("regex")
class RegexFilter(Filter):
    """The ``group_select``-th match of ``regex_pattern`` (its first non-empty group), else fallback."""

    def __init__(self, regex_pattern: str, group_select: int = 0, fallback: str = INVALID):
        try:
            self.regex = re.compile(regex_pattern)
        except re.error as exc:
            raise ConfigError(f"filter regex: bad pattern {regex_pattern!r}: {exc}") from None
        self.group_select = group_select
        self.fallback = fallback

    def apply(self, text: str) -> str:
        matches = list(self.regex.finditer(text))
        if not matches:
            return self.fallback
        try:
            m = matches[self.group_select]
        except IndexError:
            return self.fallback
        groups = [g for g in m.groups() if g] if m.groups() else []
        return groups[0] if groups else m.group(0)


@register_filter("number")
class NumberFilter(Filter):
    """Normalise a number: drop ``$``, thousands commas, trailing dots and ``.0``s; fallback if none."""

    def __init__(self, fallback: str = INVALID):
        self.fallback = fallback

    def apply(self, text: str) -> str:
        if text == INVALID:
            return self.fallback
        m = re.search(r"-?\d[\d,]*(?:\.\d+)?", text.replace("$", ""))
        if not m:
            return self.fallback
        raw = m.group(0).replace(",", "")
        if "." in raw:
            raw = raw.rstrip("0").rstrip(".") or "0"
        sign, digits = ("-", raw[1:]) if raw.startswith("-") else ("", raw)
        whole, dot, frac = digits.partition(".")
        whole = whole.lstrip("0") or "0"
        out = sign + whole + (dot + frac if frac else "")
        return "0" if out == "-0" else out


@register_filter("choice_letter")
class ChoiceLetterFilter(Filter):
    """The answer letter (A-D) of a free-form multiple-choice answer."""

    def __init__(self, letters: str = "ABCD", fallback: str = INVALID):
        self.letters = letters
        self.fallback = fallback
        cls = f"[{letters}]"
        self.patterns = [
            re.compile(rf"answer is:?\s*\(?({cls})\b"),
            re.compile(rf"^\s*\(?({cls})[\).:\s]", re.M),
            re.compile(rf"\b({cls})\b"),
        ]

    def apply(self, text: str) -> str:
        for pat in self.patterns:
            m = pat.search(text)
            if m:
                return m.group(1)
        stripped = text.strip()
        return stripped if stripped in self.letters and stripped else self.fallback


@register_filter("strip")
class StripFilter(Filter):
    """Whitespace-stripped text."""

    def apply(self, text: str) -> str:
        return text.strip()


@dataclass
class Pipeline:
    """A named chain of filters (e.g. ``strict``: regex then number)."""

    name: str
    steps: list[Filter]

    def apply(self, text: str) -> str:
        for step in self.steps:
            text = step.apply(text)
        return text

    @classmethod
    def from_config(cls, cfg: dict, where: str) -> Pipeline:
        if not isinstance(cfg, dict) or "name" not in cfg or "filter" not in cfg:
            raise ConfigError(f"{where}: a filter pipeline needs 'name' and a 'filter' list")
        steps = []
        for i, step in enumerate(cfg["filter"]):
            if not isinstance(step, dict) or "function" not in step:
                raise ConfigError(f"{where}.filter[{i}]: needs 'function'")
            args = {k: v for k, v in step.items() if k != "function"}
            steps.append(get_filter(step["function"], **args))
        return cls(str(cfg["name"]), steps)


def numbers_equal(a: str, b: str) -> bool:
    """Numeric equality tolerant of commas and ``$``; ``[invalid]`` never equals anything."""
    if a == INVALID or b == INVALID:
        return False
    try:
        return abs(float(a.replace(",", "").replace("$", "")) - float(b.replace(",", "").replace("$", ""))) < 1e-6
    except ValueError:
        return a.strip() == b.strip()
