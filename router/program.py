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


def route_signature(swarm: Swarm) -> type[dspy.Signature]:
    """``task -> agent`` with the agent typed as a Literal of the swarm's names; the instruction lists the agents."""
    agent_type = Literal[tuple(swarm.names)]  # type: ignore[valid-type]
    instructions = (
        "Route the task to the cheapest agent of the swarm that will answer it correctly. "
        "Answer with one agent name only.\nAgents, cheapest first:\n" + swarm.describe()
    )
    return dspy.Signature(
        {
            "task": (str, dspy.InputField(desc="the request to route")),
            "agent": (agent_type, dspy.OutputField(desc="one agent name from the list")),
        },
        instructions,
        signature_name="RouteTask",
    )


def agent_grammar(names: list[str]) -> str:
    """GBNF for the ChatAdapter answer ``[[ ## agent ## ]]`` + one agent name + ``[[ ## completed ## ]]``.

    llama-server samples only tokens this grammar allows, so even a 135M router LM answers with a valid agent
    instead of continuing the task (which it otherwise does on long math or exam prompts).
    """
    alternatives = " | ".join(json.dumps(n) for n in names)
    return f'root ::= "[[ ## agent ## ]]\\n" agent "\\n\\n[[ ## completed ## ]]"\nagent ::= {alternatives}\n'


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
    """Predicts the agent for a task; with ``rationale`` a short chain of thought comes first."""

    def __init__(self, swarm: Swarm, *, rationale: bool = False, max_chars: int = 600,
                 catch_parse_errors: bool = True):
        super().__init__()
        signature = route_signature(swarm)
        self.route = dspy.ChainOfThought(signature) if rationale else dspy.Predict(signature)
        # without a rationale the whole answer is one agent name: constrain llama-server's sampling to it
        # (and leave room for the longest name: the grammar ends the answer, so the cap costs nothing)
        self._lm_config = {} if rationale else {"extra_body": {"grammar": agent_grammar(swarm.names)},
                                                "max_tokens": 32 + max(len(n) for n in swarm.names)}
        self.fallback = swarm.cheapest
        self.max_chars = max_chars
        self.catch_parse_errors = catch_parse_errors

    def forward(self, task: str) -> dspy.Prediction:
        try:
            return self.route(task=task[: self.max_chars], config=self._lm_config)
        except AdapterParseError:
            if not self.catch_parse_errors:
                raise
            return dspy.Prediction(agent=self.fallback, reasoning="", parse_failed=True)


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
    program = RouterProgram(swarm, rationale=bool(manifest["rationale"]), max_chars=int(manifest["max_chars"]))
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


def load_router(program_dir: str | Path, api_base: str | None = None, *, n_ctx: int = 4096) -> Router:
    """Load a compiled router; without ``api_base`` it starts llama-server for the manifest's router model."""
    from quantswarm.registry import sha256_file
    from router.router_lm import dspy_lm, resolve_router_model, start_router_server

    program, manifest = load_program(program_dir)
    swarm = Swarm.from_dict(manifest["swarm"], f"{program_dir}/{MANIFEST}")
    engine = None
    if not api_base:
        model = resolve_router_model(manifest["router_model"])
        want = manifest.get("router_model_sha", "")
        if want and sha256_file(model) != want:
            raise ConfigError(f"{model}: sha256 {sha256_file(model)} differs from the manifest's {want}; "
                              "recompile the router for this model or pass --api-base")
        engine = start_router_server(model, n_ctx=n_ctx, parallel=1)
        api_base = engine.url
    lm = dspy_lm(api_base, max_tokens=int(manifest["max_tokens"]))
    return Router(program, swarm, lm, engine=engine, manifest=manifest)
