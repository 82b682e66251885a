"""The DSPy router program (Signature ``task -> agent`` + Module), its JSON save/load, and the loaded Router.

The agent field is a ``Literal`` of the swarm's agent names. A tiny router LM often answers off-format, so the
adapter also accepts an answer that merely names one agent; when nothing names an agent, the decision falls back
to the cheapest agent and is counted as a parse failure.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import dspy
from dspy.adapters.chat_adapter import ChatAdapter
from dspy.utils.exceptions import AdapterParseError

from quantswarm.errors import ConfigError, EngineError
from router.swarm import Swarm

MANIFEST = "manifest.json"
PROGRAM = "program.json"
FORMAT = "quantswarm-router/1"


@dataclass
class RouteDecision:
    """Where a task goes, how long deciding took, and whether the router's answer was unparseable."""

    agent: str
    latency_ms: float
    rationale: str = ""
    parse_failed: bool = False


LETTERS = "ABCDEFGHIJKLMNOP"
# task kinds of the benchmark families (the "kind" structure classifies a task into one of these)
KINDS = {"gsm8k": "math_word_problem", "mmlu": "multiple_choice_exam", "humaneval": "python_function",
         "easy": "one_step_question"}
KIND_HELP = {"math_word_problem": "a multi-step arithmetic word problem",
             "multiple_choice_exam": "an exam question with options A-D",
             "python_function": "a Python function to complete from its signature and docstring",
             "one_step_question": "a one-step question (a small sum, a unit conversion, a word to reverse or "
                                  "capitalise)"}


def kind_of(dataset: str) -> str:
    """The task kind of a benchmark family (the family name itself when it has no kind)."""
    return KINDS.get(dataset, dataset or "other")


def route_signature(swarm: Swarm, choice: str = "name") -> type[dspy.Signature]:
    """``task -> agent`` with the agent typed as a Literal of the swarm's names (``choice="name"``) or of one letter
    per agent (``choice="index"``: the decision is one token); the instruction lists the agents."""
    if choice == "index":
        letters = LETTERS[: len(swarm.names)]
        listing = "\n".join(f"{letter}: {line[2:]}" for letter, line in
                             zip(letters, swarm.describe().splitlines(), strict=True))
        agent_type = Literal[tuple(letters)]  # type: ignore[valid-type]
        desc, answer = "the letter of one agent from the list", "Answer with the agent's letter only."
    else:
        listing, agent_type = swarm.describe(), Literal[tuple(swarm.names)]  # type: ignore[valid-type]
        desc, answer = "one agent name from the list", "Answer with one agent name only."
    instructions = (
        "Route the task to the cheapest agent of the swarm that will answer it correctly. "
        f"{answer}\nAgents, cheapest first:\n{listing}"
    )
    return dspy.Signature(
        {
            "task": (str, dspy.InputField(desc="the request to route")),
            "agent": (agent_type, dspy.OutputField(desc=desc)),
        },
        instructions,
        signature_name="RouteTask",
    )


def kind_signature(kinds: list[str]) -> type[dspy.Signature]:
    """``task -> kind`` with the kind typed as a Literal of ``kinds``."""
    listing = "\n".join(f"- {k}: {KIND_HELP.get(k, k)}" for k in kinds)
    return dspy.Signature(
        {
            "task": (str, dspy.InputField(desc="the request to classify")),
            "kind": (Literal[tuple(kinds)], dspy.OutputField(desc="one kind from the list")),  # type: ignore[valid-type]
        },
        f"Classify the task into one kind. Answer with the kind only.\nKinds:\n{listing}",
        signature_name="TaskKind",
    )


def agent_grammar(names: list[str], field: str = "agent") -> str:
    """GBNF for the ChatAdapter answer ``[[ ## <field> ## ]]`` + one of ``names`` + ``[[ ## completed ## ]]``.

    llama-server samples only tokens this grammar allows, so even a 135M router LM answers with a valid agent
    instead of continuing the task (which it otherwise does on long math or exam prompts).
    """
    alternatives = " | ".join(json.dumps(n) for n in names)
    return (f'root ::= "[[ ## {field} ## ]]\\n" {field} "\\n\\n[[ ## completed ## ]]"\n'
            f"{field} ::= {alternatives}\n")


class LenientChatAdapter(ChatAdapter):
    """ChatAdapter that, when the strict parse fails, accepts the first agent name the answer mentions.

    For the optimizers' own single-text-output signatures (instruction proposals) it takes the bare answer text.
    """

    def __init__(self, names: list[str]):
        super().__init__(use_json_adapter_fallback=False)
        self.names = list(names)
        self._pattern = re.compile(
            r"(?<![\w@.-])(" + "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) + r")(?![\w@-])",
            re.IGNORECASE,
        )

    def parse(self, signature, completion: str) -> dict:
        try:
            return super().parse(signature, completion)
        except AdapterParseError:
            outputs = signature.output_fields
            if "agent" not in outputs and len(outputs) == 1 and next(iter(outputs.values())).annotation is str:
                # an optimizer's proposal LM (MIPRO, SIMBA) answered without field headers: take the text itself
                return {next(iter(outputs)): completion.strip()}
            match = self._pattern.search(completion)
            if match is None:
                raise
            lower = {n.lower(): n for n in self.names}
            fields = {"agent": lower[match.group(1).lower()]}
            if "reasoning" in signature.output_fields:
                fields["reasoning"] = completion.strip()[:500]
            return fields


class RouterProgram(dspy.Module):
    """Predicts the agent for a task; with ``rationale`` a short chain of thought comes first.

    Structures: ``agent`` predicts the agent itself (by name, or by letter with ``choice="index"``); ``kind``
    predicts the task's kind and sends it to ``policy[kind]``, the cheapest agent that succeeds on that kind often
    enough in the training split (see :func:`kind_policy`).
    """

    def __init__(self, swarm: Swarm, *, rationale: bool = False, max_chars: int = 600,
                 catch_parse_errors: bool = True, structure: str = "agent", choice: str = "name",
                 policy: dict[str, str] | None = None):
        super().__init__()
        self.structure, self.choice, self.policy = structure, choice, dict(policy or {})
        self.letters = dict(zip(LETTERS, swarm.names, strict=False))
        if structure == "kind":
            if not self.policy:
                raise ConfigError("the kind structure needs a policy (kind -> agent)")
            values, field_name, signature = list(self.policy), "kind", kind_signature(list(self.policy))
        else:
            values = list(self.letters) if choice == "index" else swarm.names
            field_name, signature = "agent", route_signature(swarm, choice)
        self.route = dspy.ChainOfThought(signature) if rationale else dspy.Predict(signature)
        # without a rationale the whole answer is one value: constrain llama-server's sampling to it
        # (and leave room for the longest value: the grammar ends the answer, so the cap costs nothing)
        self._lm_config = {} if rationale else {"extra_body": {"grammar": agent_grammar(values, field_name)},
                                                "max_tokens": 32 + max(len(n) for n in values)}
        self.fallback = swarm.cheapest
        self.max_chars = max_chars
        self.catch_parse_errors = catch_parse_errors

    def forward(self, task: str) -> dspy.Prediction:
        try:
            pred = self.route(task=task[: self.max_chars], config=self._lm_config)
        except AdapterParseError:
            if not self.catch_parse_errors:
                raise
            return dspy.Prediction(agent=self.fallback, reasoning="", parse_failed=True)
        if self.structure == "kind":
            return dspy.Prediction(agent=self.policy.get(pred.kind, self.fallback), kind=pred.kind,
                                   reasoning=getattr(pred, "reasoning", ""))
        if self.choice == "index":
            return dspy.Prediction(agent=self.letters.get(pred.agent, self.fallback), letter=pred.agent,
                                   reasoning=getattr(pred, "reasoning", ""))
        return pred


def kind_policy(examples, swarm: Swarm, tau: float) -> dict[str, str]:
    """kind -> the cheapest agent whose mean success probability on the examples of that kind is >= tau
    (else the agent with the highest mean there); the learned table of the ``kind`` structure."""
    by_kind: dict[str, list] = {}
    for ex in examples:
        by_kind.setdefault(kind_of(ex.dataset), []).append(ex)
    policy = {}
    for kind, exs in sorted(by_kind.items()):
        mean = {a: sum(ex.p(a) for ex in exs) / len(exs) for a in swarm.names}
        able = [a for a in swarm.names if mean[a] >= tau]
        policy[kind] = (min(able, key=lambda a: (swarm.cost(a), a)) if able
                        else max(swarm.names, key=lambda a: (mean[a], -swarm.cost(a))))
    return policy


def save_program(program: RouterProgram, out: str | Path, manifest: dict) -> Path:
    """Write ``program.json`` (DSPy JSON state, never pickle) and ``manifest.json`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    program.save(str(out / PROGRAM))
    full = {"format": FORMAT, "date": datetime.now(UTC).isoformat(timespec="seconds"), **manifest}
    (out / MANIFEST).write_text(json.dumps(full, indent=2, sort_keys=True, default=str))
    return out


def read_manifest(program_dir: str | Path) -> dict:
    d = Path(program_dir)
    path = d / MANIFEST
    if not path.is_file():
        raise ConfigError(f"{d}: no {MANIFEST}; give a directory written by `quantswarm router compile`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg})") from None
    if manifest.get("format") != FORMAT:
        raise ConfigError(f"{path}: format {manifest.get('format')!r} is not {FORMAT!r}; recompile the router")
    for key in ("swarm", "rationale", "max_tokens", "max_chars", "router_model"):
        if key not in manifest:
            raise ConfigError(f"{path}: missing key {key!r}; recompile the router")
    if not (d / PROGRAM).is_file():
        raise ConfigError(f"{d}: no {PROGRAM} beside the manifest; recompile the router")
    return manifest


def load_program(program_dir: str | Path) -> tuple[RouterProgram, dict]:
    """Rebuild the program from its manifest and load its JSON state (checked before it is applied)."""
    manifest = read_manifest(program_dir)
    swarm = Swarm.from_dict(manifest["swarm"], f"{program_dir}/{MANIFEST}")
    program = RouterProgram(swarm, rationale=bool(manifest["rationale"]), max_chars=int(manifest["max_chars"]),
                            structure=manifest.get("structure", "agent"), choice=manifest.get("choice", "name"),
                            policy=manifest.get("policy"))
    try:
        program.load(str(Path(program_dir) / PROGRAM))
    except Exception as exc:
        raise ConfigError(f"{program_dir}/{PROGRAM}: does not fit the manifest's program ({exc}); recompile") from None
    return program, manifest


class Router:
    """A loaded router program bound to its router LM; ``route(text)`` answers with a RouteDecision."""

    def __init__(self, program: RouterProgram, swarm: Swarm, lm, *, engine=None, manifest: dict | None = None):
        self.program, self.swarm, self.lm, self.engine = program, swarm, lm, engine
        self.manifest = manifest or {}
        self.adapter = LenientChatAdapter(swarm.names)
        self.name = str(self.manifest.get("optimizer", "program"))

    def route(self, text: str) -> RouteDecision:
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("route needs a non-empty task text")
        t0 = time.perf_counter()
        with dspy.context(lm=self.lm, adapter=self.adapter):
            try:
                pred = self.program(task=text)
            except Exception as exc:  # the LM server failed: say so, do not guess silently
                raise EngineError(f"router LM call failed: {type(exc).__name__}: {str(exc)[:200]}") from None
        ms = (time.perf_counter() - t0) * 1000
        return RouteDecision(pred.agent, ms, str(getattr(pred, "reasoning", "") or ""),
                             bool(getattr(pred, "parse_failed", False)))

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def manifest_router_model(manifest: dict) -> Path:
    """The router LM's GGUF named by a compiled program's manifest: its path, or — compiled on another machine — the
    same file found by name; checked against the manifest's sha256. Raises ConfigError on a sha mismatch."""
    from quantswarm.registry import sha256_file
    from router.router_lm import resolve_router_model

    where = manifest["router_model"]
    model = (resolve_router_model(where) if Path(where).is_file() or not manifest.get("router_model_file")
             else resolve_router_model("", manifest["router_model_file"]))
    want = manifest.get("router_model_sha", "")
    if want and sha256_file(model) != want:
        raise ConfigError(f"{model}: sha256 {sha256_file(model)} differs from the manifest's {want}; "
                          "recompile the router for this model or pass --api-base")
    return model


def load_router(program_dir: str | Path, api_base: str | None = None, *, n_ctx: int = 4096,
                n_gpu_layers: int = -1) -> Router:
    """Load a compiled router; without ``api_base`` it starts llama-server for the manifest's router model."""
    from router.router_lm import dspy_lm, start_router_server

    program, manifest = load_program(program_dir)
    swarm = Swarm.from_dict(manifest["swarm"], f"{program_dir}/{MANIFEST}")
    engine = None
    if not api_base:
        engine = start_router_server(manifest_router_model(manifest), n_ctx=n_ctx, parallel=1,
                                     n_gpu_layers=n_gpu_layers)
        api_base = engine.url
    lm = dspy_lm(api_base, max_tokens=int(manifest["max_tokens"]))
    return Router(program, swarm, lm, engine=engine, manifest=manifest)
