"""EvalConfig: one documented dataclass for an eval grid (models × tasks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from quantswarm.engine import BACKENDS
from quantswarm.errors import ConfigError


def _task_name(entry: str) -> str:
    """The name a task entry runs under: a shipped task's name, or the ``task`` key of a YAML path."""
    from evals.task import task_names

    p = Path(entry)
    if not p.suffix:
        if entry not in task_names():
            raise ConfigError(f"tasks: unknown task {entry!r}; known: {', '.join(task_names())} (or give a YAML path)")
        return entry
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"tasks: {entry}: cannot read this task YAML ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("task"), str):
        raise ConfigError(f"tasks: {entry}: a task YAML needs a string `task` key")
    return data["task"]


@dataclass
class EvalConfig:
    """What to evaluate, on what, and where the rows go.

    Models: ``models`` entries are GGUF paths, catalogue names, ``NAME=PATH`` (agent name given),
    or ladder folders (every rung, labelled with how it was made).
    Data: ``tasks`` are task names or YAML paths; ``limit`` items per task (seeded, the same for
    every model), ``task_limits`` overrides per task; ``split`` overrides each task's split.
    Engine: ``backend``, ``parallel`` slots/contexts, ``n_ctx`` per slot, ``n_gpu_layers``.
    Output: rows are appended to the results table at ``results``; a rerun skips finished items.
    """

    # models and tasks
    models: list[str] = field(
        default_factory=list, metadata={"help": "GGUF paths, NAME=PATH, catalogue names or ladder dirs"}
    )
    tasks: list[str] = field(
        default_factory=lambda: ["gsm8k_cot_zeroshot", "mmlu_logprob"],
        metadata={"help": "task names (evals/tasks/*.yaml) or YAML paths"},
    )
    # data
    limit: int | None = field(default=None, metadata={"help": "items per task (None: all)"})
    task_limits: dict[str, int] = field(default_factory=dict, metadata={"help": "per-task item limits"})
    split: str | None = field(default=None, metadata={"help": "override each task's split (e.g. train for repair)"})
    seed: int = field(default=0, metadata={"help": "seed of the item subset and of decoding"})
    data_dir: str | None = field(
        default=None, metadata={"help": "local data folder (default: $QUANTSWARM_DATA, ../shared/data)"}
    )
    source: str = field(
        default="auto",
        metadata={"help": "auto | local | hub | shipped", "choices": ["auto", "local", "hub", "shipped"]},
    )
    # engine
    backend: str = field(
        default="auto", metadata={"help": "auto | llama-server | llama-cpp-python", "choices": list(BACKENDS)}
    )
    parallel: int = field(default=4, metadata={"help": "concurrent requests (server slots or in-process contexts)"})
    n_ctx: int = field(default=2048, metadata={"help": "context tokens per slot"})
    n_gpu_layers: int = field(default=-1, metadata={"help": "layers on the GPU (-1: all; ignored on a CPU build)"})
    n_threads: int | None = field(default=None, metadata={"help": "CPU threads (default: all cores)"})
    loras: dict[str, str] = field(default_factory=dict, metadata={
        "help": "agent name -> GGUF LoRA applied over that agent's GGUF by llama-server (--lora)"})
    replicas: int | str = field(default=1, metadata={
        "help": "llama-server processes per model, each with `parallel` slots (one process caps its tok/s), or "
                "auto: from the GPU's free memory and the CPU cores (1 without a GPU)"})
    gpus: list[int] = field(default_factory=list, metadata={
        "help": "GPUs (CUDA indices) the replicas are spread over in turn, each replica whole on one GPU "
                "(--split-mode none --main-gpu); empty: llama.cpp's default, every server's layers split over all "
                "visible GPUs"})
    backend_sampling: bool = field(default=False, metadata={
        "help": "llama-server --backend-sampling: the sampler runs on the GPU beside the model, not per slot on the "
                "CPU (outputs may differ from CPU sampling; llama-server only)"})
    concurrent_models: int = field(default=1, metadata={
        "help": "models evaluated at once, each with its own llama-server(s) on the same device (a ladder's rungs "
                "share one GPU); energy per row is then not recorded"})
    shared_device: bool = field(default=False, metadata={
        "help": "other work runs on the same GPU meanwhile (e.g. concurrent evals in threads): energy per row and "
                "per block is not recorded, as the GPU's energy counter cannot tell the works apart"})
    max_tokens: int | None = field(default=None, metadata={"help": "override each task's max_tokens"})
    # decoding
    repeats: int = field(default=1, metadata={
        "help": "answers per item, with seeds seed, seed+1, ... (k > 1 with temperature > 0 estimates p(success))"})
    temperature: float | None = field(default=None, metadata={"help": "override each task's temperature"})
    top_p: float | None = field(default=None, metadata={"help": "override each task's top_p"})
    allow_code_execution: bool = field(default=False, metadata={
        "help": "run model-written code against the task's tests (sandboxed subprocess); needed by code tasks"})
    # output
    results: str = field(default="runs/results", metadata={"help": "results table directory (Parquet parts)"})
    run_id: str | None = field(default=None, metadata={"help": "run id (default: a new timestamped id)"})
    flush_every: int = field(default=32, metadata={"help": "write a Parquet part every N finished items"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("EvalConfig.models is empty: give at least one GGUF path, catalogue name or ladder dir")
        if not self.tasks:
            raise ConfigError("EvalConfig.tasks is empty: e.g. gsm8k_cot_zeroshot, mmlu_logprob")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {BACKENDS}, not {self.backend!r}")
        if self.parallel < 1:
            raise ConfigError("parallel must be >= 1")
        if isinstance(self.replicas, str):
            text = self.replicas.strip().lower()
            if text != "auto" and not text.isdigit():
                raise ConfigError(f"replicas must be a positive integer or auto, not {self.replicas!r}")
            self.replicas = text if text == "auto" else int(text)
        if self.replicas != "auto" and self.replicas < 1:
            raise ConfigError("replicas must be >= 1 (or auto)")
        if any(g < 0 for g in self.gpus) or len(set(self.gpus)) != len(self.gpus):
            raise ConfigError(f"gpus must be distinct CUDA indices >= 0, not {self.gpus}")
        if self.gpus and self.backend == "llama-cpp-python":
            raise ConfigError("gpus places llama-server replicas; use backend llama-server (or auto)")
        if self.concurrent_models < 1:
            raise ConfigError("concurrent_models must be >= 1")
        if self.backend_sampling and self.backend == "llama-cpp-python":
            raise ConfigError("backend_sampling is a llama-server option; use backend llama-server (or auto)")
        if self.repeats < 1:
            raise ConfigError("repeats must be >= 1")
        if self.temperature is not None and self.temperature < 0:
            raise ConfigError("temperature must be >= 0")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("limit must be >= 1 (or None for all items)")
        names = {entry: _task_name(entry) for entry in self.tasks}
        known = set(names.values())
        limits = {}
        for k, v in self.task_limits.items():
            name = names.get(k, k)
            if name not in known:
                raise ConfigError(f"task_limits: {k!r} is not one of the tasks being run ({', '.join(sorted(known))}); "
                                  "fix the name or add the task")
            if v < 1:
                raise ConfigError(f"task_limits[{k}] must be >= 1")
            limits[name] = v
        self.task_limits = limits
        if self.source not in ("auto", "local", "hub", "shipped"):
            raise ConfigError(f"source must be auto, local, hub or shipped, not {self.source!r}")
        self.results = str(Path(self.results))

    def limit_for(self, task: str) -> int | None:
        """Items to run of ``task`` (its own limit, else the common one)."""
        return self.task_limits.get(task, self.limit)
