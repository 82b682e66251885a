"""A task is a YAML file (``evals/tasks/<name>.yaml``): prompts, decoding, filters and metric.

:func:`load_task` validates the YAML into a :class:`Task`, which turns an item into chat
messages (k-shot exemplars as earlier turns) and scores an output with every named filter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import yaml

from evals.filters import INVALID, Pipeline, numbers_equal
from quantswarm.engine.base import GenerationParams, Message
from quantswarm.errors import ConfigError
from quantswarm.loaders import Item, load

TASK_DIR = Path(__file__).parent / "tasks"
METHODS = ("generate", "logprob", "code")
METRICS = ("numeric_match", "exact_match", "easy_match", "pass_at_1")
KEYS = {"task", "dataset", "split", "method", "num_fewshot", "fewshot_split", "system", "doc_to_text",
        "fewshot_target", "generation_kwargs", "metric", "primary_filter", "filter_list", "metadata", "choices"}
_JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)


@dataclass
class FilterResult:
    """One filter's reading of one output."""

    filter: str
    extracted: str
    correct: bool
    primary: bool


@dataclass
class Task:
    """A validated task definition (see the YAML files for the meaning of each key)."""

    name: str
    version: str
    dataset: str
    split: str
    method: str
    metric: str
    doc_to_text: str
    pipelines: list[Pipeline]
    primary_filter: str
    system: str = ""
    num_fewshot: int = 0
    fewshot_split: str = ""
    fewshot_target: str = "{{ gold }}"
    generation: GenerationParams = field(default_factory=GenerationParams)
    choices: list[str] = field(default_factory=list)

    # --- prompts ---------------------------------------------------------------------------
    def _render(self, template: str, item: Item) -> str:
        ctx = {"question": item.question, "choices": item.choices, "gold": item.gold, "rationale": item.rationale,
               "subject": item.subject, "subject_name": item.subject.replace("_", " ") or "general knowledge"}
        try:
            return _JINJA.from_string(template).render(**ctx)
        except jinja2.TemplateError as exc:
            raise ConfigError(f"task {self.name}: template error {exc}") from None

    def fewshot_items(self, item: Item, pool: list[Item]) -> list[Item]:
        """The k exemplars for ``item``: same subject for MMLU, the first k of the pool otherwise."""
        if self.num_fewshot == 0:
            return []
        same = [p for p in pool if p.subject == item.subject and p.item_id != item.item_id] if item.subject else []
        chosen = same or [p for p in pool if p.item_id != item.item_id]
        return chosen[: self.num_fewshot]

    def messages(self, item: Item, fewshot: list[Item] = ()) -> list[Message]:
        msgs: list[Message] = []
        if self.system:
            msgs.append({"role": "system", "content": self._render(self.system, item)})
        for ex in fewshot:
            msgs.append({"role": "user", "content": self._render(self.doc_to_text, ex)})
            msgs.append({"role": "assistant", "content": self._render(self.fewshot_target, ex)})
        msgs.append({"role": "user", "content": self._render(self.doc_to_text, item)})
        return msgs

    # --- scoring ---------------------------------------------------------------------------
    def is_correct(self, extracted: str, gold: str) -> bool:
        if extracted == INVALID:
            return False
        if self.metric == "numeric_match":
            return numbers_equal(extracted, gold)
        if self.metric == "easy_match":  # the last number against a number; a word among the words (case matters)
            if _is_number(gold):
                nums = re.findall(r"-?\d[\d,]*(?:\.\d+)?", extracted.replace("\u2212", "-"))
                return bool(nums) and numbers_equal(nums[-1], gold)
            return gold.strip() in re.findall(r"[A-Za-z]+", extracted)
        return extracted.strip() == gold.strip()

    def score(self, output: str, item: Item, *, allow_code_execution: bool = False) -> list[FilterResult]:
        """Every filter's extraction of ``output`` and whether it matches the gold answer.

        A ``code`` task runs the answer against the item's tests (:mod:`evals.sandbox`); its one filter reads
        ``passed`` / ``failed: <error>`` / ``timeout``. That needs ``allow_code_execution``.
        """
        if self.method == "code":
            from evals.sandbox import humaneval_program, run_program

            if not output.strip():  # nothing to run (an engine error row, an empty answer)
                return [FilterResult(p.name, INVALID, False, p.name == self.primary_filter) for p in self.pipelines]
            if not allow_code_execution:
                raise ConfigError(f"task {self.name} executes model-written code; pass allow_code_execution")
            program = humaneval_program(item.question, output, item.extra.get("test", ""),
                                        item.extra.get("entry_point", ""))
            res = run_program(program)
            text = res.status + (f": {res.detail}" if res.detail and not res.passed else "")
            return [FilterResult(p.name, text, res.passed, p.name == self.primary_filter) for p in self.pipelines]
        out = []
        for p in self.pipelines:
            ext = p.apply(output)
            out.append(FilterResult(p.name, ext, self.is_correct(ext, item.gold), p.name == self.primary_filter))
        return out

    # --- data ------------------------------------------------------------------------------
    def load_items(self, limit: int | None, seed: int, data_dir=None, source: str = "auto",
                   split: str | None = None) -> list[Item]:
        return load(self.dataset, split or self.split, limit=limit, seed=seed, data_dir=data_dir, source=source)

    def load_fewshot_pool(self, data_dir=None, source: str = "auto") -> list[Item]:
        if self.num_fewshot == 0:
            return []
        return load(self.dataset, self.fewshot_split, data_dir=data_dir, source=source)


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
        return True
    except ValueError:
        return False


def task_names() -> list[str]:
    return sorted(p.stem for p in TASK_DIR.glob("*.yaml"))


def load_task(name_or_path: str | Path) -> Task:
    """A task by name (``evals/tasks/<name>.yaml``) or from a YAML path, validated."""
    p = Path(name_or_path)
    if not p.suffix:
        p = TASK_DIR / f"{name_or_path}.yaml"
    if not p.exists():
        raise ConfigError(f"unknown task {name_or_path!r}; known: {', '.join(task_names())} (or give a YAML path)")
    try:
        cfg = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({exc})") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{p}: a task file is a mapping")
    unknown = set(cfg) - KEYS
    if unknown:
        raise ConfigError(f"{p}: unknown keys {sorted(unknown)}; allowed: {sorted(KEYS)}")
    for key in ("task", "dataset", "doc_to_text", "filter_list", "primary_filter"):
        if key not in cfg:
            raise ConfigError(f"{p}: missing key {key!r}")
    method = cfg.get("method", "generate")
    if method not in METHODS:
        raise ConfigError(f"{p}: method must be one of {METHODS}, not {method!r}")
    metric = cfg.get("metric", "exact_match")
    if metric not in METRICS:
        raise ConfigError(f"{p}: metric must be one of {METRICS}, not {metric!r}")
    pipelines = [Pipeline.from_config(f, f"{p}:filter_list[{i}]") for i, f in enumerate(cfg["filter_list"])]
    if cfg["primary_filter"] not in {x.name for x in pipelines}:
        raise ConfigError(f"{p}: primary_filter {cfg['primary_filter']!r} is not in filter_list")
    gk = dict(cfg.get("generation_kwargs") or {})
    bad = set(gk) - {"max_tokens", "temperature", "top_p", "seed", "stop", "grammar"}
    if bad:
        raise ConfigError(f"{p}: generation_kwargs has unknown keys {sorted(bad)}")
    gen = GenerationParams(**{**gk, "stop": tuple(gk.get("stop", ()))})
    k = int(cfg.get("num_fewshot", 0))
    if k and not cfg.get("fewshot_split"):
        raise ConfigError(f"{p}: num_fewshot > 0 needs fewshot_split")
    if method == "logprob" and not cfg.get("choices"):
        raise ConfigError(f"{p}: method logprob needs 'choices'")
    return Task(
        name=str(cfg["task"]), version=str((cfg.get("metadata") or {}).get("version", "0")),
        dataset=str(cfg["dataset"]), split=str(cfg.get("split", "test")), method=method, metric=metric,
        doc_to_text=str(cfg["doc_to_text"]), pipelines=pipelines, primary_filter=str(cfg["primary_filter"]),
        system=str(cfg.get("system", "")), num_fewshot=k, fewshot_split=str(cfg.get("fewshot_split", "")),
        fewshot_target=str(cfg.get("fewshot_target", "{{ gold }}")), generation=gen,
        choices=list(cfg.get("choices") or []),
    )
