"""The demo loop, one small function per stage, each printing as it goes.

1. ladder: F16 from the published quant, then the quants, with llama.cpp's quantizer;
2. KLD of every rung against F16 on held-out text (``evals/heldout.txt``: MMLU dev + HumanEval, not the imatrix text);
3. accuracy on GSM8K + MMLU samples, and the report (Markdown, CSVs, PNG);
4. routing labels from those results: per item, the cheapest of the swarm's agents that got it right;
5. a router compiled with a fast optimizer (LabeledFewShot by default);
6. a 3-agent swarm serving that router: ``model="auto"`` requests through the gateway, one through the
   LangGraph supervisor, each with the agent chosen and the latency;
7. where everything was written.

Only public entry points of the jobs are used: ``make_ladder``, ``kld.measure``, ``run_eval``,
``write_report``, ``compile_router``, ``Swarm`` + ``GatewayServer`` and ``build_graph``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from quantswarm.errors import ConfigError

if TYPE_CHECKING:
    import httpx

    from evals.kld import Fidelity
    from evals.ladder import Rung
    from evals.report import Report
    from router.compiler import CompileResult

GSM8K = "gsm8k_cot_zeroshot"
MMLU = "mmlu_logprob"
REQUESTS = (
    "What is 17 * 23?",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Which gas do plants take in from the air to make sugar?\nA. oxygen\nB. carbon dioxide\nC. helium\nD. neon",
    "Write a Python function that returns the reverse of a string.",
    "Give me two tips for a job interview.",
)


@dataclass
class DemoConfig:
    """Settings of the demo; the defaults run in minutes on a 2-core CPU.

    Models: ``model`` (catalogue name or GGUF path), ``name`` (agent prefix), ``quants``, ``router_quant``.
    Eval: ``gsm8k_items``, ``mmlu_items``, ``max_tokens``, ``parallel``, ``kld_ctx``, ``kld_chunks``.
    Router: ``optimizer``. Serving: ``requests``, ``request_max_tokens``, ``graph``. Output: ``out``.
    """

    model: str = field(default="smollm2-135m-instruct-q4_1", metadata={"help": "catalogue name or GGUF path"})
    name: str = field(default="smollm2", metadata={"help": "agent name prefix: agents are NAME@QUANT"})
    quants: tuple[str, ...] = field(default=("Q8_0", "Q4_K_M", "Q2_K"),
                                    metadata={"help": "ladder rungs below F16; they are the swarm's agents"})
    router_quant: str = field(default="Q8_0", metadata={"help": "the rung that also runs the router program"})
    gsm8k_items: int = field(default=10, metadata={"help": "GSM8K test items per rung (shipped sample)"})
    mmlu_items: int = field(default=24, metadata={"help": "MMLU test items per rung (shipped sample, 5-shot)"})
    max_tokens: int = field(default=192, metadata={"help": "answer cap of a GSM8K item"})
    parallel: int = field(default=2, metadata={"help": "llama-server slots while evaluating"})
    kld_ctx: int = field(default=256, metadata={"help": "tokens per KLD chunk"})
    kld_chunks: int = field(default=6, metadata={"help": "KLD chunks of held-out text"})
    optimizer: str = field(default="labeled", metadata={"help": "router optimizer (labeled is the fast one)"})
    requests: tuple[str, ...] = field(default=REQUESTS, metadata={"help": "model=auto requests sent to the swarm"})
    request_max_tokens: int = field(default=48, metadata={"help": "answer cap of a served request"})
    graph: bool = field(default=True, metadata={"help": "also send one request through the LangGraph supervisor"})
    out: str = field(default="runs/demo", metadata={"help": "output folder (ladder, results, router, swarm spec)"})

    def __post_init__(self) -> None:
        self.quants = tuple(q.upper() for q in self.quants)
        self.router_quant = self.router_quant.upper()
        if len(self.quants) < 2:
            raise ConfigError("quants: give at least two rungs below F16 (routing needs two agents)")
        if self.router_quant not in self.quants:
            raise ConfigError(f"router_quant={self.router_quant!r} is not one of quants {list(self.quants)}")
        for name in ("gsm8k_items", "mmlu_items", "max_tokens", "parallel", "kld_ctx", "kld_chunks",
                     "request_max_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: set a positive number")
        if not self.requests:
            raise ConfigError("requests: give at least one request")
        from router.router_config import OPTIMIZERS

        if self.optimizer not in OPTIMIZERS:  # caught here, not minutes later at the compile stage
            raise ConfigError(f"optimizer={self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
        for q in self.quants:
            if not q.replace("_", "").isalnum():
                raise ConfigError(f"quants: {q!r} is not a llama.cpp quant type such as Q4_K_M")

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # output layout
    @property
    def root(self) -> Path:
        return Path(self.out)

    @property
    def ladder_dir(self) -> Path:
        return self.root / "ladder"

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    @property
    def routing_dir(self) -> Path:
        return self.root / "routing"

    @property
    def router_dir(self) -> Path:
        return self.root / "router"

    @property
    def spec_path(self) -> Path:
        return self.root / "swarm.yaml"

    def agent(self, quant: str) -> str:
        """The rung's agent in the eval results (``NAME@QUANT``, as a ladder folder names it)."""
        return f"{self.name}@{quant}"

    def swarm_agent(self, quant: str) -> str:
        """The rung's agent in the routing table, the router and the swarm (``NAME-QUANT``: spec names take no @)."""
        return f"{self.name}-{quant}"


Say = Callable[[str], None]


def _say(msg: str) -> None:
    print(msg, flush=True)


class _Stage:
    """Prints a stage's title on entry and its wall time on exit."""

    def __init__(self, say: Say, n: int, total: int, title: str):
        self.say, self.title, self.tag = say, title, f"[{n}/{total}]"

    def __enter__(self) -> _Stage:
        self.t0 = time.perf_counter()
        self.say(f"\n{self.tag} {self.title}")
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.say(f"{self.tag} done in {time.perf_counter() - self.t0:.0f} s")


def _table(rows: list[dict]) -> str:
    from quantswarm.text_table import format_table

    return format_table(rows)


# --- stages -----------------------------------------------------------------------------------


def stage_ladder(cfg: DemoConfig, say: Say) -> list[Rung]:
    """The reference (F16 from the published quant) and every rung; cached by the source's sha256."""
    from evals.ladder import make_ladder
    from quantswarm.registry import CATALOGUE, fetch, resolve_model

    src = fetch(cfg.model, try_hub=False) if cfg.model in CATALOGUE else resolve_model(cfg.model)
    rungs = make_ladder(src, cfg.ladder_dir, cfg.quants)  # checks every quant name before quantizing
    say(_table([{"agent": cfg.agent(r.quant), "made as": r.reference, "bits/weight": f"{r.bits_per_weight:.2f}",
                 "MiB": f"{r.size_bytes / 2**20:.1f}"} for r in rungs]))
    return rungs


def stage_kld(cfg: DemoConfig, rungs: list[Rung], say: Say) -> dict[str, Fidelity]:
    """Mean KLD and top-1 agreement of each rung against F16 (llama-perplexity) on held-out text."""
    from evals.kld import HELDOUT, measure

    ref = next(r for r in rungs if r.is_reference)
    text = HELDOUT  # MMLU dev + HumanEval, never the importance matrix's text (evals/TEXTS.md)
    say(f"held-out text: {text.name} (MMLU dev + HumanEval, evals/TEXTS.md; {cfg.kld_chunks} x {cfg.kld_ctx} tokens)")
    fid = measure((cfg.agent(ref.quant), ref.path), [(cfg.agent(r.quant), r.path) for r in rungs if not r.is_reference],
                  cfg.results_dir, text=text, n_ctx=cfg.kld_ctx, chunks=cfg.kld_chunks)
    say(_table([{"agent": f.agent, "mean KLD": f"{f.mean_kld:.4f}", "same top-1": f"{f.same_top1_pct:.1f}%",
                 "PPL": f"{f.ppl:.2f}"} for f in fid]))
    return {f.agent: f for f in fid}


def stage_eval(cfg: DemoConfig, say: Say) -> Report:
    """GSM8K + MMLU on every rung (the same seeded items), then the report files."""
    from evals.eval_config import EvalConfig
    from evals.report import write_report
    from evals.runner import run_eval

    run_eval(EvalConfig(models=[f"{cfg.name}={cfg.ladder_dir}"], tasks=[GSM8K, MMLU],
                        task_limits={GSM8K: cfg.gsm8k_items, MMLU: cfg.mmlu_items}, source="shipped",
                        results=str(cfg.results_dir), parallel=cfg.parallel, n_ctx=3072, max_tokens=cfg.max_tokens))
    rep = write_report(cfg.results_dir)
    return rep


def accuracy_rows(rep: Report, fidelity: dict[str, Fidelity], order: list[str] | None = None) -> list[dict]:
    """One row per rung (in ``order``): primary-filter accuracy per task with its CI, the change vs F16, KLD."""
    acc = rep.accuracy[rep.accuracy.primary]
    pair = {(r.agent, r.task): r for r in rep.paired.itertuples()} if not rep.paired.empty else {}
    rows = []
    for agent, g in acc.groupby("agent", sort=False):
        row = {"agent": agent, "made as": g.made_as.iloc[0]}
        for r in g.itertuples():
            label = "GSM8K" if r.task.startswith("gsm8k") else "MMLU" if r.task.startswith("mmlu") else r.task
            row[f"{label} (n={r.n})"] = f"{r.accuracy:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]"
            p = pair.get((agent, r.task))
            row[f"Δ{label}"] = "—" if p is None else f"{p.diff:+.2f}"
        f = fidelity.get(agent)
        row["KLD"] = "—" if f is None else f"{f.mean_kld:.4f}"
        rows.append(row)
    rank = {a: i for i, a in enumerate(order or [])}
    return sorted(rows, key=lambda r: (rank.get(r["agent"], len(rank)), r["agent"]))


@contextmanager
def models_in(folder: Path) -> Iterator[None]:
    """``QUANTSWARM_MODELS`` set to ``folder`` meanwhile: where the router finds the rungs' GGUF files to price
    them by size (bits/weight x parameters: latencies measured on a shared CPU would reorder them run to run)."""
    old = os.environ.get("QUANTSWARM_MODELS")
    os.environ["QUANTSWARM_MODELS"] = str(folder.resolve())
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("QUANTSWARM_MODELS", None)
        else:
            os.environ["QUANTSWARM_MODELS"] = old


def stage_labels(cfg: DemoConfig, say: Say) -> Path:
    """The swarm's rungs' rows in a table of their own, and the labels compile will learn from."""
    from quantswarm.results import ResultsTable
    from router.labels import load_labeled
    from router.router_config import RouterConfig

    names = {cfg.agent(q): cfg.swarm_agent(q) for q in cfg.quants}
    frame = ResultsTable(cfg.results_dir).read(source="eval")
    frame = frame[frame.agent.isin(list(names))].assign(agent=lambda f: f.agent.map(names))
    shutil.rmtree(cfg.routing_dir, ignore_errors=True)
    ResultsTable(cfg.routing_dir).append(frame)
    with models_in(cfg.ladder_dir):
        data = load_labeled(RouterConfig(results=str(cfg.routing_dir), cost_basis="size"))
    counts: dict[str, int] = {}
    for ex in data.examples:
        counts[ex.agent] = counts.get(ex.agent, 0) + 1
    say(f"{len(data.examples)} items, each labelled with the cheapest agent that got it right "
        f"(cost: {data.swarm.cost_unit}; nobody right: {data.swarm.strongest})")
    say(_table([{"agent": a.name, "cost": f"{a.cost:.3g}",
                 "accuracy": "—" if a.accuracy is None else f"{a.accuracy:.2f}",
                 "labels": counts.get(a.name, 0)} for a in data.swarm.agents]))
    return cfg.routing_dir


def stage_compile(cfg: DemoConfig, rungs: list[Rung], say: Say) -> CompileResult:
    """The router program compiled on those labels, run on the router rung's model."""
    from router.compiler import compile_router
    from router.router_config import RouterConfig

    router_rung = next(r for r in rungs if r.quant == cfg.router_quant)
    with models_in(cfg.ladder_dir):
        res = compile_router(RouterConfig(results=str(cfg.routing_dir), optimizer=cfg.optimizer, cost_basis="size",
                                          router_model=router_rung.path, out=str(cfg.router_dir), n_ctx=2048,
                                          num_threads=2), log=lambda m: say(f"  {m}"))
    say(f"router: {res.out} ({res.optimizer}; dev score {res.dev_score_before:.2f} -> {res.dev_score_after:.2f}, "
        f"{res.n_train} train / {res.n_dev} dev items)")
    return res


def write_spec(cfg: DemoConfig, rungs: list[Rung]) -> Path:
    """The swarm spec: one agent per rung (router rung with role router), the compiled program, a fallback
    chain from the fewest bits to the most."""
    import yaml

    swarm = sorted((r for r in rungs if not r.is_reference), key=lambda r: r.bits_per_weight)
    from serving.workers import free_port_block

    base = free_port_block(len(swarm) + 1)
    spec = {
        "version": 1,
        "agents": {cfg.swarm_agent(r.quant): {"model": str(Path(r.path).resolve()), "n_ctx": 2048, "parallel": 2,
                                              "n_threads": 1,
                                              "role": "router" if r.quant == cfg.router_quant else "general"}
                   for r in swarm},
        "router": {"program": str(cfg.router_dir.resolve()), "agent": cfg.swarm_agent(cfg.router_quant)},
        "fallback": [cfg.swarm_agent(r.quant) for r in swarm],
        "vram": {"budget_mib": 0},
        "gateway": {"port": base + len(swarm)},
        "workers": {"start_port": base, "log_dir": str((cfg.root / "logs").resolve())},
        "monitor": {"csv": str((cfg.root / "monitor.csv").resolve())},
    }
    cfg.spec_path.write_text("# written by `quantswarm demo`; serve it again with `quantswarm serve` + this file\n"
                             + yaml.safe_dump(spec, sort_keys=False))
    return cfg.spec_path


def ask(client: httpx.Client, text: str, max_tokens: int) -> dict:
    """One ``model="auto"`` request through the gateway: route, agent, latency, answer."""
    t0 = time.perf_counter()
    r = client.post("/v1/chat/completions", json={"model": "auto", "max_tokens": max_tokens,
                                                  "messages": [{"role": "user", "content": text}]})
    ms = (time.perf_counter() - t0) * 1000
    if r.status_code != 200:
        raise ConfigError(f"gateway answered {r.status_code}: {r.text[:200]}")
    body = r.json()
    q = body["quantswarm"]
    return {"request": _short(text, 34), "router chose": q["route"]["agent"], "source": q["route"]["source"],
            "answered by": body["model"],
            "route ms": f"{q['route']['latency_ms']:.0f}", "total ms": f"{ms:.0f}",
            "answer": _short(body["choices"][0]["message"]["content"], 40)}


REQUEST_COLUMNS = {"request": 34, "router chose": 14, "answered by": 14, "route ms": -8, "total ms": -8, "answer": 0}


def _request_line(row: dict) -> str:
    """One request as a fixed-width line (printed as soon as it is answered); negative widths align right."""
    return "  ".join(str(row[c]).rjust(-w) if w < 0 else str(row[c]).ljust(w)
                     for c, w in REQUEST_COLUMNS.items()).rstrip()


def _short(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def stage_serve(cfg: DemoConfig, rungs: list[Rung], say: Say) -> list[dict]:
    """Load the swarm, send the requests through its gateway (and one through the LangGraph supervisor)."""
    import httpx

    from serving.gateway import GatewayServer
    from serving.swarm import Swarm
    from serving.swarm_config import load_swarm

    spec = write_spec(cfg, rungs)
    say(f"swarm spec: {spec}")
    rows: list[dict] = []
    with Swarm(load_swarm(spec), log=lambda m: say(f"  {m}")) as swarm, GatewayServer(swarm) as gw:
        say(f"gateway: {gw.url}/v1 (OpenAI-compatible; model=\"auto\" asks the router)")
        with httpx.Client(base_url=gw.url, timeout=300) as client:
            say(_request_line({c: c for c in REQUEST_COLUMNS}))
            for text in cfg.requests:
                rows.append(ask(client, text, cfg.request_max_tokens))
                say(_request_line(rows[-1]))
        if cfg.graph:
            from serving.graph import graph_for_swarm

            t0 = time.perf_counter()
            out = graph_for_swarm(swarm).invoke({"request": {"model": "auto", "max_tokens": cfg.request_max_tokens,
                                                             "messages": [{"role": "user",
                                                                           "content": cfg.requests[0]}]}})
            hops = " -> ".join(f"{h['agent']}({'ok' if h['valid'] else h['reason']})" for h in out["hops"])
            say(f"LangGraph supervisor, same first request: route {out['route']['agent']} "
                f"({out['route']['source']}), hops {hops}, {(time.perf_counter() - t0) * 1000:.0f} ms")
    return rows


def stage_where(cfg: DemoConfig, say: Say) -> dict[str, Path]:
    """Where the demo left its files, and the commands that read them again."""
    report = cfg.results_dir / "report"
    where = {"results table (Parquet)": cfg.results_dir, "report": report / "summary.md",
             "plot": report / "accuracy_vs_bpw.png", "accuracy CSV": report / "accuracy.csv",
             "router program": cfg.router_dir / "program.json", "swarm spec": cfg.spec_path}
    for k, v in where.items():
        say(f"  {k:24} {v}{'' if v.exists() else '  (missing)'}")
    say(f"  again: quantswarm eval report {cfg.results_dir}   |   quantswarm serve {cfg.spec_path}")
    return where


def run_demo(cfg: DemoConfig | None = None, say: Say = _say) -> dict:
    """Run every stage in order; returns what each produced (for tests and notebooks)."""
    cfg = cfg or DemoConfig()
    t0 = time.perf_counter()
    n = 7
    say(f"quantswarm demo: {cfg.model}, ladder F16 + {', '.join(cfg.quants)}, CPU; output in {cfg.root}")
    with _Stage(say, 1, n, "quant ladder (llama-quantize)"):
        rungs = stage_ladder(cfg, say)
    with _Stage(say, 2, n, "KL divergence vs F16 on held-out text (llama-perplexity)"):
        fidelity = stage_kld(cfg, rungs, say)
    with _Stage(say, 3, n, f"accuracy: {cfg.gsm8k_items} GSM8K + {cfg.mmlu_items} MMLU items per rung"):
        rep = stage_eval(cfg, say)
        say(_table(accuracy_rows(rep, fidelity, [cfg.agent(r.quant) for r in rungs])))
    with _Stage(say, 4, n, "routing labels from those results"):
        stage_labels(cfg, say)
    with _Stage(say, 5, n, f"router compiled with {cfg.optimizer}"):
        compiled = stage_compile(cfg, rungs, say)
    with _Stage(say, 6, n, f"a {len(cfg.quants)}-agent swarm serving that router: model=\"auto\" requests"):
        served = stage_serve(cfg, rungs, say)
    with _Stage(say, 7, n, "where everything is"):
        where = stage_where(cfg, say)
    say(f"\ndemo finished in {time.perf_counter() - t0:.0f} s")
    return {"rungs": rungs, "fidelity": fidelity, "report": rep, "compiled": compiled, "served": served,
            "where": where}
