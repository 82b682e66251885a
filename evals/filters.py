"""Named answer-extraction filters, registered by name like lm-eval-harness's.

A task YAML lists filter pipelines; each step names a registered filter and gives its
constructor arguments as keys. A filter maps a string to a string and never raises on a
non-match: it returns its ``fallback`` (``[invalid]``) instead.

Numbers are read the way models write them: a Unicode minus or dash before a digit is a
minus sign, currency signs (``$ \\$ € £ ¥ ₹``), LaTeX wrappers (``$…$``, ``\\(…\\)``,
``\\text{}``, ``{,}``, ``\\,``) and markdown emphasis (``**460**``) are dropped by
``normalize``, thousands separators (``1,250``, thin spaces) and trailing zeros
(``460.00``) by ``number``; ``cut_continuation`` drops a new question a model (a base
model especially) goes on to write after its answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from quantswarm.errors import ConfigError

INVALID = "[invalid]"

# A number as written in an answer, once ``normalize`` has run: an optional minus sign right
# before the digits (not one after a digit or a closing bracket: ``10-5`` is a subtraction),
# digits with optional thousands commas, optional decimals, and no more digits after it.
NUMBER = r"(?:(?<![\d)\]}])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\d|,\d{3}|\.\d)"
_NUMBER_RE = re.compile(NUMBER)
_MINUS = "\u2212\ufe63\uff0d"  # minus sign, small and fullwidth hyphen-minus: always a minus
_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015"  # hyphens and dashes: a minus only right before a digit
_NORMALIZE = [
    (re.compile(f"[{_MINUS}]|[{_DASHES}](?=\\s?\\d)"), "-"),
    (re.compile(r"\\?[$€£¥₹]"), ""),  # currency, escaped or not; also TeX math delimiters
    (re.compile(r"\\[()\[\]]"), ""),  # \( \) \[ \]
    (re.compile(r"\\(?:text|textbf|mathrm|mathbf)\{([^{}]*)\}"), r"\1"),
    (re.compile(r"\{,\}"), ","),  # TeX thousands comma 1{,}250
    (re.compile(r"(?<=\d)(?:\\[,!; ]|[\u00a0\u2009\u202f])(?=\d{3}(?!\d))"), ""),  # 1\,250, thin spaces
    (re.compile(r"(?<!\w)(\*{1,3}|_{1,3})(?=\S)(.+?)(?<=\S)\1(?!\w)"), r"\2"),  # markdown emphasis
]


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
    """The ``group_select``-th match of ``regex_pattern`` (its first non-empty group), else fallback.

    ``{number}`` in the pattern stands for :data:`NUMBER` (a signed number with optional
    thousands commas and decimals), so task YAMLs need not spell it out.
    """

    def __init__(self, regex_pattern: str, group_select: int = 0, fallback: str = INVALID,
                 ignore_case: bool = False):
        try:
            self.regex = re.compile(regex_pattern.replace("{number}", NUMBER), re.I if ignore_case else 0)
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


def canonical_number(text: str) -> str | None:
    """The first number in ``text`` in canonical form (``-1250``, ``3.5``, ``0``), or None.

    Drops currency signs, thousands separators, leading zeros and trailing decimal zeros;
    reads a Unicode minus (U+2212) or a dash right before a digit as a minus sign.
    """
    m = _NUMBER_RE.search(normalize_text(text))
    if not m:
        return None
    raw = re.sub(r"[\s,]", "", m.group(0))
    sign, digits = ("-", raw[1:]) if raw.startswith("-") else ("", raw)
    whole, _, frac = digits.partition(".")
    whole = whole.lstrip("0") or "0"
    frac = frac.rstrip("0")
    out = sign + whole + ("." + frac if frac else "")
    return "0" if out == "-0" else out


def normalize_text(text: str) -> str:
    """``text`` with minus signs made ASCII and currency, TeX and markdown decoration dropped."""
    for pattern, repl in _NORMALIZE:
        text = pattern.sub(repl, text)
    return text


@register_filter("normalize")
class NormalizeFilter(Filter):
    """Unicode minus and dashes before digits to ``-``; drop currency, TeX wrappers, emphasis."""

    def apply(self, text: str) -> str:
        return normalize_text(text)


@register_filter("cut_continuation")
class CutContinuationFilter(Filter):
    """Text up to a new question the model went on to write (``\n\nQuestion: …``).

    Cuts at the first match of ``regex_pattern`` that comes after some answer text (a digit
    before it), so a model restating the question at the start is not cut to nothing.
    """

    DEFAULT = r"\n[\s#*>]*(?:Question|Problem|Q|User|Human)(?:\s*\d+)?\s*[:.)]"

    def __init__(self, regex_pattern: str = DEFAULT):
        try:
            self.regex = re.compile(regex_pattern)
        except re.error as exc:
            raise ConfigError(f"filter cut_continuation: bad pattern {regex_pattern!r}: {exc}") from None

    def apply(self, text: str) -> str:
        for m in self.regex.finditer(text):
            if re.search(r"\d", text[: m.start()]):
                return text[: m.start()]
        return text


@register_filter("number")
class NumberFilter(Filter):
    """The first number of the text in canonical form (see :func:`canonical_number`); fallback if none."""

    def __init__(self, fallback: str = INVALID):
        self.fallback = fallback

    def apply(self, text: str) -> str:
        if text == INVALID:
            return self.fallback
        return canonical_number(text) or self.fallback


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
    """Numeric equality of two answers in any format :func:`canonical_number` reads.

    ``[invalid]`` never equals anything; text without a number compares as stripped text.
    """
    if a == INVALID or b == INVALID:
        return False
    x, y = canonical_number(a), canonical_number(b)
    if x is None or y is None:
        return a.strip() == b.strip()
    return abs(float(x) - float(y)) < 1e-6
