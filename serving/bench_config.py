"""BenchConfig: the settings of one ``quantswarm bench`` run (a light module: the CLI builds its options from it
without loading the bench's heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass, field

from quantswarm.errors import ConfigError

PROFILES = ("short", "research", "toolstorm", "mixed", "routed")
TRANSPORTS = ("http", "bus")


@dataclass
class BenchConfig:
    """Settings of one bench run (the swarm itself comes from its spec).

    Load: n, rate, concurrency, profile, model, max_tokens, transport, nats, closed_loop. Output: results, out.
    Studies: sweep_parallel x sweep_ctx, compare_modes. The ``routed`` profile draws its tasks from the held-out
    split of the spec's compiled router (``labels``: that router's labels JSONL; :mod:`serving.routed_workload`)
    and scores each answer with its eval task.
    """

    n: int = field(default=100, metadata={"help": "requests to send"})
    rate: float = field(default=0.0, metadata={"help": "requests per second (0: as fast as concurrency allows)"})
    concurrency: int = field(default=5, metadata={"help": "requests in flight at once"})
    profile: str = field(default="mixed", metadata={"help": "workload profile", "choices": PROFILES})
    model: str = field(default="auto", metadata={"help": "model of every request: auto (routed), an agent name, "
                                                  "or `spread` (round-robin over all agents, named)"})
    max_tokens: int = field(default=16, metadata={"help": "max tokens per answer"})
    transport: str = field(default="http", metadata={"help": "send over the gateway or the bus", "choices": TRANSPORTS})
    nats: str = field(default="local", metadata={"help": "NATS URL for --transport bus, or `local` to start one"})
    results: str = field(default="runs/results", metadata={"help": "results table the per-request rows go to"})
    out: str = field(default="runs/bench", metadata={"help": "folder for the summary JSON (committed results go to "
                                                     "benchmarks/results only when asked for with --out)"})
    sweep_parallel: list[int] = field(default_factory=list, metadata={"help": "slots per agent to sweep"})
    sweep_ctx: list[int] = field(default_factory=list, metadata={"help": "n_ctx values to sweep"})
    compare_modes: bool = field(default=False, metadata={"help": "also run the swap and shared-model modes at the "
                                                                 "same concurrency (mode study)"})
    closed_loop: bool = field(default=False, metadata={"help": "bus: keep at most `concurrency` tasks outstanding "
                                                       "(like that many clients each waiting for its answer); off: "
                                                       "publish at the paced rate and let the consumer queue"})
    labels: str = field(default="", metadata={"help": "routed profile: the router's labels JSONL (its held-out "
                                              "split, from the spec's router.program manifest, is the workload)"})
    data_dir: str | None = field(default=None, metadata={"help": "routed profile: benchmark data folder (default: "
                                                         "$QUANTSWARM_DATA, else the shipped items)"})
    allow_code_execution: bool = field(default=False, metadata={"help": "routed profile: keep HumanEval items and "
                                                                "score them by running the model's code (sandboxed)"})
    seed: int = field(default=0, metadata={"help": "workload seed"})
    timeout_s: float = field(default=600.0, metadata={"help": "give up waiting for answers after this long"})

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ConfigError(f"--profile: {self.profile!r} is not one of {', '.join(PROFILES)}")
        if self.transport not in TRANSPORTS:
            raise ConfigError(f"--transport: {self.transport!r} is not one of {', '.join(TRANSPORTS)}")
        if self.n < 1 or self.concurrency < 1 or self.max_tokens < 1 or self.rate < 0:
            raise ConfigError("--n, --concurrency and --max-tokens must be >= 1 and --rate >= 0")
        if self.profile == "routed" and not self.labels:
            raise ConfigError("--profile routed needs --labels (the compiled router's labels JSONL)")
        if any(p < 1 for p in self.sweep_parallel) or any(c < 16 for c in self.sweep_ctx):
            raise ConfigError("--sweep-parallel values must be >= 1 and --sweep-ctx values >= 16")
