"""RouterConfig: every setting of `quantswarm router compile | eval | route`, documented and validated."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from quantswarm.errors import ConfigError

OPTIMIZERS = ("labeled", "bootstrap_rs", "mipro", "gepa", "simba")
SHIPPED_LABELS = Path(__file__).resolve().parent.parent / "data" / "routing" / "labeled.jsonl"
SHIPPED_SWARM = Path(__file__).resolve().parent.parent / "data" / "routing" / "swarm.json"


@dataclass
class RouterConfig:
    """Settings for compiling, evaluating and running the router.

    Data: ``results`` (a results table with several agents on the same items) or ``labels`` (hand-labeled JSONL with
    ``task`` and ``agent``) plus ``swarm`` (the agents, their costs and descriptions).
    Cost: ``power_w``, ``unsolved_agent``, ``partial_credit``.
    Program: ``optimizer``, ``rationale``, ``seed``, ``max_tokens``, ``max_chars``.
    Router LM: ``router_model``, ``api_base``, ``n_ctx``, ``num_threads``.
    Budgets: ``max_demos``, ``num_candidates``, ``mipro_auto``, ``gepa_max_metric_calls``, ``simba_*``.
    """

    # --- data ---
    results: str = field(default="", metadata={"help": "Results table directory (per-item rows of several agents)"})
    labels: str = field(default="", metadata={"help": "Hand-labeled JSONL: one {task, agent[, also_ok]} per line"})
    swarm: str = field(default="", metadata={"help": "Swarm spec JSON (agents, costs, descriptions); with --labels"})
    task: str = field(default="", metadata={"help": "Only use results rows of this task name (default: all)"})
    split_seed: int = field(default=0, metadata={"help": "Seed of the train/dev/test split (hash of item key)"})
    train_frac: float = field(default=0.5, metadata={"help": "Fraction of items for training"})
    dev_frac: float = field(default=0.2, metadata={"help": "Fraction of items for dev (optimizer validation)"})
    max_train: int = field(default=16, metadata={"help": "Cap on training examples given to the optimizer"})
    max_dev: int = field(default=12, metadata={"help": "Cap on dev examples given to the optimizer"})
    max_test: int = field(default=0, metadata={
        "help": "Cap on held-out examples `router eval` scores (0: all; the split is shuffled, so a cap is a sample)"})
    # --- cost ---
    power_w: float = field(
        default=30.0, metadata={"help": "Watts assumed when rows carry no joules: cost = latency_ms/1000 x power_w"}
    )
    cost_basis: str = field(
        default="auto", metadata={"help": "Cost per item: auto (joules, else latency, else size) | joules | latency | "
                                          "size (bits/weight x params of the GGUF)",
                                  "choices": ("auto", "joules", "latency", "size")}
    )
    tau: float = field(default=0.5, metadata={
        "help": "Success-probability threshold: the label is the cheapest agent whose share of right answers on the "
                "item is >= tau"})
    cost_file: str = field(default="", metadata={
        "help": "Energy model JSON per agent (J per prompt / generated token, measured alone on the GPU); "
                "overrides cost_basis"})
    structure: str = field(default="agent", metadata={
        "help": "Program structure: agent (task -> agent name) | kind (task -> task kind, then the cheapest agent "
                "whose mean success on that kind in the training split is >= tau)",
        "choices": ("agent", "kind")})
    choice: str = field(default="name", metadata={
        "help": "How the agent is named in the answer: name (grammar-constrained agent name) | index (one letter "
                "per agent: a one-token choice)", "choices": ("name", "index")})
    unsolved_agent: str = field(
        default="", metadata={"help": "Label for items no agent solved (default: the most accurate agent)"}
    )
    partial_credit: float = field(
        default=0.5, metadata={"help": "Metric credit for a competent agent dearer than the label (0..1)"}
    )
    # --- program ---
    optimizer: str = field(default="labeled", metadata={"help": "DSPy optimizer", "choices": OPTIMIZERS})
    rationale: bool = field(default=False, metadata={"help": "Ask for a short rationale first (slower)"})
    seed: int = field(default=0, metadata={"help": "Optimizer seed"})
    max_tokens: int = field(default=24, metadata={"help": "Router LM max tokens per decision (64 with rationale)"})
    max_chars: int = field(default=600, metadata={"help": "Task text is cut to this many characters"})
    # --- router LM ---
    router_model: str = field(
        default="", metadata={"help": "Router GGUF (default: the cheapest agent's file, else SmolLM2-135M)"}
    )
    api_base: str = field(
        default="", metadata={"help": "Use a running llama-server (e.g. http://127.0.0.1:8080) instead of starting one"}
    )
    n_ctx: int = field(default=4096, metadata={"help": "Context tokens per router LM slot"})
    num_threads: int = field(default=2, metadata={"help": "Parallel DSPy calls (also llama-server slots)"})
    n_gpu_layers: int = field(default=-1, metadata={
        "help": "Router LM layers on the GPU (-1: all; a CPU build ignores it)"})
    # --- optimizer budgets (tiny by default: CPU and a 135M router LM) ---
    max_demos: int = field(default=4, metadata={"help": "Max few-shot demos per predictor"})
    num_candidates: int = field(default=2, metadata={"help": "BootstrapFewShotWithRandomSearch candidate programs"})
    mipro_auto: str = field(default="light", metadata={"help": "MIPROv2 budget", "choices": ("light", "medium")})
    gepa_max_metric_calls: int = field(default=40, metadata={"help": "GEPA metric-call budget"})
    reflection_model: str = field(
        default="", metadata={"help": "GEPA/SIMBA reflection LM as a llama-server URL (default: the router LM)"}
    )
    reflection_max_tokens: int = field(
        default=128, metadata={"help": "Max tokens of a GEPA/SIMBA/MIPRO proposal (instruction rewrite)"}
    )
    simba_steps: int = field(default=2, metadata={"help": "SIMBA optimization steps"})
    simba_bsize: int = field(default=4, metadata={"help": "SIMBA mini-batch size"})
    simba_candidates: int = field(default=2, metadata={"help": "SIMBA candidates per step"})
    # --- output ---
    out: str = field(default="", metadata={"help": "Program directory (default: runs/router/<optimizer>)"})

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer={self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
        if self.results and self.labels:
            raise ConfigError("give either results (a results table) or labels (a JSONL), not both")
        if not 0 < self.train_frac < 1 or not 0 <= self.dev_frac < 1 or self.train_frac + self.dev_frac >= 1:
            raise ConfigError("train_frac and dev_frac must be in (0, 1) and leave room for a test split")
        if not 0 <= self.partial_credit <= 1:
            raise ConfigError(f"partial_credit={self.partial_credit}: set a value between 0 and 1")
        if self.power_w <= 0:
            raise ConfigError(f"power_w={self.power_w}: set a positive wattage")
        if not 0 < self.tau <= 1:
            raise ConfigError(f"tau={self.tau}: set a probability in (0, 1]")
        if self.structure not in ("agent", "kind"):
            raise ConfigError(f"structure={self.structure!r}: choose agent or kind")
        if self.choice not in ("name", "index"):
            raise ConfigError(f"choice={self.choice!r}: choose name or index")
        if self.cost_basis not in ("auto", "joules", "latency", "size"):
            raise ConfigError(f"cost_basis={self.cost_basis!r}: choose auto, joules, latency or size")
        if self.mipro_auto not in ("light", "medium"):
            raise ConfigError(f"mipro_auto={self.mipro_auto!r}: choose light or medium")
        for name in ("max_train", "max_dev", "max_tokens", "max_chars", "n_ctx", "num_threads", "num_candidates",
                     "gepa_max_metric_calls", "reflection_max_tokens", "simba_steps", "simba_bsize",
                     "simba_candidates"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: set a positive number")
        if self.max_test < 0:
            raise ConfigError(f"max_test={self.max_test}: set 0 (all) or a positive number")
        if self.max_demos < 0:
            raise ConfigError(f"max_demos={self.max_demos}: set 0 or more")
        if self.api_base and not self.api_base.startswith(("http://", "https://")):
            raise ConfigError(f"api_base={self.api_base!r}: give a URL such as http://127.0.0.1:8080")
        if self.labels and not self.swarm:
            self.swarm = str(SHIPPED_SWARM)
        if not self.results and not self.labels:
            self.labels, self.swarm = str(SHIPPED_LABELS), self.swarm or str(SHIPPED_SWARM)
        if not self.out:
            self.out = f"runs/router/{self.optimizer}"

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}
