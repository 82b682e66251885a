"""Serving campaign: plan, load-test and measure co-resident swarms, one command per machine.

For each swarm spec: the VRAM plan (planned VRAM, n_gpu_layers and CPU-offloaded layers per agent); N tasks through
the NATS JetStream bus with 5 concurrent clients (closed loop), `model=auto` when a compiled router is set (the
spec's ``router.program`` or ``--router-program``), else requests spread over the agents by name; avg/p50/p95/p99
latency, share of requests per agent, aggregate tok/s, mean power and Wh per 1M tokens (NVML; "n/a (no GPU)"
without one); planned vs measured memory per agent (NVML per-process VRAM, else host RSS) and in total (NVML used
VRAM before vs after the load). On the first spec also: the execution modes at equal concurrency
(:mod:`serving.bench_modes`: swap = one model per request type loaded on demand, shared = one model, and the
co-resident swarm, each with ``--concurrency`` requests in flight and the single-model modes with that many slots;
before, a 1-slot model answering one request at a time was compared with the swarm at 5 in flight, which measured
concurrency rather than the mode), and a parallel-slots x n_ctx sweep of one agent (over HTTP: no bus in the
capacity study).

Writes to --out: campaign.json, campaign.md, campaign.png (latency and planned vs measured memory), campaign.log,
monitor-<spec>.csv/.png (GPU only), the bench summaries (serving-*.json) and the per-request results table.

    .venv/bin/python benchmarks/serving_campaign.py --preset cpu --out /tmp/serving-cpu [--n 10 --sweep-n 8]
    python3 benchmarks/serving_campaign.py --preset gpu --router-program DIR --out OUT    # one H100
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import yaml

from quantswarm.energy import device_label
from quantswarm.errors import ConfigError
from quantswarm.text_table import format_table, markdown_table
from serving.bench import BenchConfig, BenchSession, run_sweep, single_agent, summary_rows, workload
from serving.bench_config import PROFILES
from serving.bench_modes import compare_modes
from serving.monitor import Monitor, plot_monitor
from serving.planner import MIB
from serving.serve import plan_only
from serving.swarm_config import SwarmConfig, config_from_dict
from serving.workers import plan_error_pct

REPO = Path(__file__).resolve().parent.parent
NA = "n/a (no GPU)"
PRESETS = {
    # the 2-core CPU machine: 3 SmolLM2 agents, 16-token answers
    "cpu": {"specs": ["data/swarms/cpu-demo.yaml"], "n": 100, "max_tokens": 16, "sweep_n": 40,
            "sweep_parallel": [1, 2, 4], "sweep_ctx": [256, 512], "sweep_agent": None, "timeout_s": 900.0},
    # one H100: the 16 GiB consumer-GPU plan, then the tight plan that offloads layers to the CPU; the sweep on the
    # published Q4_K_M agent. Sized to finish well inside a 10-minute device command.
    "gpu": {"specs": ["data/swarms/h100-qwen-16gib.yaml", "data/swarms/h100-qwen-tight.yaml"], "n": 100,
            "max_tokens": 128, "sweep_n": 64, "sweep_parallel": [1, 4, 16], "sweep_ctx": [2048, 8192],
            "sweep_agent": "math", "timeout_s": 240.0},
    # one H200: the reference swarm (SmolLM2 router + Qwen 0.5B + Qwen 1.5B F16/Q4_K_M/Q3_K_M/Q2_K) under 16 GiB,
    # then under a tight budget that offloads layers; the compiled router decides every task (model=auto), tasks
    # from its held-out split scored by their eval task, at 5 and 20 clients; each agent alone and all at once;
    # the execution modes; the knee sweep of the 1.5B Q4_K_M with a long-context point (32768 tokens per slot, its
    # trained context).
    "h200": {"specs": ["data/swarms/h200-reference.yaml", "data/swarms/h200-reference-tight.yaml"], "n": 200,
             "concurrency": [5, 20], "max_tokens": 128, "profile": "routed",
             "labels": "benchmarks/results/gpu/2026-11-30-h200-campaign/labels.jsonl", "alone_n": 32,
             "alone_concurrency": 4, "modes_n": 40, "sweep_n": 48, "sweep_parallel": [1, 4, 16],
             "sweep_ctx": [4096, 32768], "sweep_agent": "qwen15-q4km", "timeout_s": 300.0},
    # two H200s: the reference swarm placed one agent per GPU (best fit) and with the F16 split over both, then the
    # same swarm on one GPU (the baseline of speedup_vs_one_gpu), routed, at 5 and 20 clients; per-GPU memory/energy
    "h200x2": {"specs": ["data/swarms/h200x2-reference.yaml", "data/swarms/h200x2-reference-split.yaml",
                         "data/swarms/h200-reference.yaml"], "n": 200, "concurrency": [5, 20], "max_tokens": 128,
               "profile": "routed", "labels": "benchmarks/results/gpu/2026-11-30-h200-campaign/labels.jsonl",
               "baseline": "h200-reference", "no_sweep": True, "no_compare": True, "sweep_n": 0,
               "sweep_parallel": [], "sweep_ctx": [], "sweep_agent": None, "timeout_s": 300.0},
}
DEFAULTS = {"concurrency": [5], "profile": "mixed", "labels": "", "alone_n": 0, "alone_concurrency": 4,
            "modes_n": None, "baseline": None, "no_sweep": False, "no_compare": False}


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--spec", action="append", help="swarm spec YAML (repeatable; default: the preset's)")
    ap.add_argument("--router-program", help="compiled router directory; overrides every spec's router.program")
    ap.add_argument("--model", help="request model: auto, an agent or spread (default: auto with a router "
                                    "program, else spread)")
    ap.add_argument("--n", type=int, help="tasks per spec (default: the preset's)")
    ap.add_argument("--concurrency", type=_ints, help="concurrent clients, one load per value in one swarm load, "
                                                      "e.g. 5,20 (default: the preset's)")
    ap.add_argument("--profile", choices=PROFILES, help="workload (default: the preset's; routed = the compiled "
                                                        "router's held-out tasks, scored)")
    ap.add_argument("--labels", help="routed profile: the router's labels JSONL")
    ap.add_argument("--data-dir", help="routed profile: benchmark data folder")
    ap.add_argument("--allow-code-execution", action="store_true",
                    help="routed profile: keep HumanEval tasks and score them by running the answers (sandboxed)")
    ap.add_argument("--alone-n", type=int, help="requests per agent for the each-agent-alone baseline (0: none)")
    ap.add_argument("--alone-concurrency", type=int, help="clients per agent in the alone and all-at-once runs")
    ap.add_argument("--modes-n", type=int, help="requests per execution mode (default: --n)")
    ap.add_argument("--max-tokens", type=int)
    ap.add_argument("--sweep-n", type=int, help="requests per sweep point")
    ap.add_argument("--sweep-parallel", type=_ints, help="slots to sweep, e.g. 1,4,16")
    ap.add_argument("--sweep-ctx", type=_ints, help="n_ctx values to sweep, e.g. 2048,8192")
    ap.add_argument("--sweep-agent", help="agent of the sweep (default: the preset's, else the spec's default agent)")
    ap.add_argument("--no-sweep", action="store_true", default=None)
    ap.add_argument("--no-compare", action="store_true", default=None,
                    help="skip the execution modes (swap / shared / co-resident)")
    ap.add_argument("--baseline", help="spec name (file stem) whose tok/s the others are divided by "
                                       "(speedup_vs_one_gpu in summary.json)")
    ap.add_argument("--timeout-s", type=float, help="give up waiting for one bench's answers after this long")
    ap.add_argument("--out", help="output folder (default: runs/serving-campaign-<preset>-<time>)")
    ap.add_argument("--results", help="results table for the per-request rows (default: <out>/results)")
    args = ap.parse_args()
    for k, v in {**DEFAULTS, **PRESETS[args.preset]}.items():
        key = "spec" if k == "specs" else k
        if getattr(args, key, None) is None:
            setattr(args, key, [str(REPO / s) for s in v] if k == "specs" else v)
    args.out = args.out or str(REPO / f"runs/serving-campaign-{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}")
    args.results = args.results or str(Path(args.out) / "results")
    if args.labels and not Path(args.labels).is_absolute():
        args.labels = str(REPO / args.labels) if (REPO / args.labels).exists() else args.labels
    if args.labels and args.profile != "routed":
        ap.error(f"--labels is read by the routed profile only (this run's profile: {args.profile})")
    if not args.concurrency or min(args.concurrency) < 1:
        ap.error("--concurrency: give one or more counts >= 1, e.g. 5,20")
    if args.modes_n is not None and args.modes_n < 1 or args.alone_n < 0 or args.alone_concurrency < 1:
        ap.error("--modes-n and --alone-concurrency must be >= 1, --alone-n >= 0")
    args.modes_n = args.modes_n or args.n
    try:  # every run's settings, checked before any model is made or loaded
        BenchConfig(n=args.n, concurrency=args.concurrency[0], profile=args.profile, max_tokens=args.max_tokens,
                    labels=args.labels or "", timeout_s=args.timeout_s)
    except ConfigError as exc:
        ap.error(str(exc))
    return args


def load_spec(path: str, router_program: str | None) -> SwarmConfig:
    """Read a spec, with ``router.program`` replaced by ``router_program`` when given (then validated as usual)."""
    data = yaml.safe_load(Path(path).read_text())
    if router_program:
        data.setdefault("router", {})["program"] = str(Path(router_program).resolve())
    return config_from_dict(data, path)


def router_note(cfg: SwarmConfig) -> dict:
    """Which compiled router decides `auto`, and which of its agent names this swarm lacks (those go to default)."""
    if not cfg.router.program:
        return {"program": None, "note": f"no router program: model=auto goes to {cfg.default_agent()!r}"}
    manifest = Path(cfg.router.program) / "manifest.json"
    names = json.loads(manifest.read_text()).get("agents", []) if manifest.is_file() else []
    missing = [a for a in names if a not in cfg.agents]
    note = f"{cfg.router.kind} router {cfg.router.program} (agents {names})"
    if missing:
        note += f"; {missing} not in this swarm: decisions for them go to {cfg.default_agent()!r}"
    return {"program": cfg.router.program, "agents": names, "missing": missing, "note": note}


def plan_rows(cfg: SwarmConfig, plan) -> list[dict]:
    rows = []
    for n in plan.order:
        a = plan.agents[n]
        rows.append({"agent": n, "model": Path(cfg.agents[n].model).name, "ctx x slots":
                     f"{cfg.agents[n].n_ctx}x{cfg.agents[n].parallel}", "ngl": f"{a.n_gpu_layers}/{a.n_layers + 1}",
                     "cpu_layers": a.n_layers + 1 - a.n_gpu_layers, "planned_vram_MiB": round(a.gpu_bytes / MIB, 1),
                     "planned_host_MiB": round(a.cpu_bytes / MIB, 1)})
    return rows


def _f(x, nd: int = 1, na: str = NA) -> str:
    return na if x is None else f"{x:.{nd}f}"


def memory_rows(mem: dict) -> list[dict]:
    """Planned vs measured memory per agent and in total; measured VRAM where NVML lists the worker, else RSS."""
    rows, vram_sum, any_vram = [], 0.0, False
    for m in mem["agents"]:
        kind, meas, pct = m["measure"], m["measured_mib"], plan_error_pct(m)
        if kind == "vram" and meas is not None:
            vram_sum, any_vram = vram_sum + meas, True
        by_gpu = placement({"agents": [m]})[m["agent"]]["planned_vs_measured_mib"]
        rows.append({"agent": m["agent"], "ngl planned/loaded": f"{m['planned_ngl']}/{m['n_gpu_layers']} of "
                     f"{m['n_layers']}", "per GPU planned -> measured MiB": "; ".join(
                         f"{g}: {p:.0f} -> {_f(v, 0, 'n/a')}" for g, (p, v) in by_gpu.items()),
                     "planned_vram_MiB": _f(m["planned_vram_mib"]),
                     "planned_host_MiB": _f(m["planned_host_mib"]), "measured": kind,
                     "measured_MiB": _f(meas, na="n/a"),
                     "error": "n/a" if pct is None else
                              f"{pct:+.0f}% vs planned {'VRAM' if kind == 'vram' else 'weights+KV'}"})
    delta = mem["vram_load_delta_mib"]
    rows.append({"agent": "TOTAL", "ngl planned/loaded": "", "per GPU planned -> measured MiB": "",
                 "planned_vram_MiB": _f(mem["planned_vram_mib"]),
                 "planned_host_MiB": _f(mem["planned_host_mib"]), "measured": "NVML used-VRAM delta over the load",
                 "measured_MiB": _f(delta),
                 "error": (f"{(delta - mem['planned_vram_mib']) / mem['planned_vram_mib'] * 100:+.0f}%; per-process "
                           f"sum {vram_sum:.1f} MiB" if any_vram else "")
                 if delta is not None and mem["planned_vram_mib"] else ""})
    return rows


def bench_rows(s: dict) -> dict:
    """One run's headline numbers, energy marked n/a without a GPU."""
    lat = s["latency_ms"]
    share = {a: f"{v['requests'] / s['ok'] * 100:.0f}%" for a, v in sorted(s["per_agent"].items())} if s["ok"] else {}
    return {"run": s["label"], "ok/requests": f"{s['ok']}/{s['requests']}", "avg_ms": lat["avg"], "p50_ms": lat["p50"],
            "p95_ms": lat["p95"], "p99_ms": lat["p99"], "router_ms": s["router_ms"]["avg"], "tok/s": s["tok_s"],
            "req/s": s["req_s"], "avg_W": _f(s.get("avg_power_w")), "Wh/1Mtok": _f(s["wh_per_mtok"], 2),
            "vram_peak_MiB": _f(s["vram_peak_mib"], 0), "share": ", ".join(f"{a} {p}" for a, p in share.items()),
            "route_sources": ", ".join(f"{k} {v}" for k, v in sorted(s.get("route_sources", {}).items())),
            "accuracy": _accuracy_cell(s)}


def _accuracy_cell(s: dict) -> str:
    acc = s.get("accuracy", {}).get("all")
    return f"{acc['accuracy']:.3f} ({acc['correct']}/{acc['n']})" if acc else "n/a"


def accuracy_rows(s: dict) -> list[dict]:
    """Accuracy of the routed answers per agent and per task kind (from a run's summary)."""
    return [{"group": k, "n": v["n"], "correct": v["correct"], "accuracy": v["accuracy"]}
            for k, v in s.get("accuracy", {}).items()]


def markdown(report: dict) -> str:
    out = [f"# Serving campaign ({report['preset']}) — {report['started']}", "",
           f"- device: {report['device']}", f"- command: `{report['command']}`",
           f"- load: {report['n']} tasks per run through the NATS bus at {report['concurrency']} concurrent clients "
           f"(closed loop: a client sends its next task when its answer is back), {report['profile']} workload"
           f"{' (the compiled router held-out tasks, ' + report['labels'] + ')' if report.get('labels') else ''}, "
           f"max_tokens {report['max_tokens']}; latency = publish to result", ""]
    for e in report["specs"]:
        out += [f"## {e['name']}", "", f"`{e['spec']}`", ""]
        if "plan" in e:
            out += ["### Plan", "", e["plan"]["summary"], "", markdown_table(e["plan"]["rows"])]
        if "router" in e:
            out += [f"Routing: {e['router']['note']}; request model `{e.get('model', '')}`.", ""]
        if e.get("benches"):
            out += ["### Load test", "", markdown_table([bench_rows(b) for b in e["benches"]])]
            for b in e["benches"]:
                if b.get("accuracy"):
                    out += [f"Accuracy of the answers at {b['concurrency']} clients (max_tokens "
                            f"{b['max_tokens']}: a longer chain of thought is cut there):", "",
                            markdown_table(accuracy_rows(b))]
        if e.get("alone"):
            al = e["alone"]
            out += [f"### Each agent alone vs all at once ({al['n_per_agent']} tasks, {al['concurrency_per_agent']} "
                    "clients per agent; one swarm load)", "", markdown_table(al["alone"]),
                    f"Sum of the agents alone: {al['sum_alone_tok_s']:.1f} tok/s; all at once: "
                    f"{al['all_at_once_tok_s']} tok/s (**{al['all_at_once_vs_sum_alone']}x** the sum, "
                    f"p95 {al['all_at_once_p95_ms']} ms). "
                    f"Routed runs / sum alone: {al['routed_vs_sum_alone']} (routing sends most tasks to few agents, "
                    "so a routed run leaves the others idle).", ""]
        if e.get("memory"):
            out += ["### Planned vs measured memory (after load)", "", markdown_table(memory_rows(e["memory"]))]
        if e.get("monitor_png"):
            out += [f"Power and VRAM over the spec's runs: `{Path(e['monitor_png']).name}`", ""]
        for err in e.get("errors", []):
            out += [f"**error**: {err}", ""]
    if report.get("modes"):
        out += [f"## Execution modes at {report['concurrency'][0]} requests in flight (swap / shared / co-resident)",
                "", markdown_table(report["modes"])]
    if report.get("sweep"):
        sw = report["sweep"]
        out += [f"## parallel x n_ctx sweep of agent `{sw['agent']}` (HTTP, short chat, {sw['n']} requests per point, "
                "concurrency = slots)", "", markdown_table(sw["rows"])]
    for err in report.get("errors", []):
        out += [f"**error**: {err}", ""]
    return "\n".join(out)


def planner_error_pct(memory: dict) -> dict[str, float | None]:
    """Per agent: (measured - planned) / planned x 100 for the measure taken (NVML VRAM, else host RSS)."""
    pcts = {m["agent"]: plan_error_pct(m) for m in memory.get("agents", [])}
    return {a: None if p is None else round(p, 1) for a, p in pcts.items()}


def summary_json(report: dict) -> dict:
    """The headline figures per spec: p95 and tok/s per concurrency, Wh/1M tokens, accuracy, planner error."""
    specs = {}
    for e in report["specs"]:
        benches = e.get("benches", [])
        specs[e["name"]] = {
            "p95_ms": {str(b["concurrency"]): b["latency_ms"]["p95"] for b in benches},
            "tok_s": {str(b["concurrency"]): b["tok_s"] for b in benches},
            "wh_per_mtok": {str(b["concurrency"]): b["wh_per_mtok"] for b in benches},
            "avg_power_w": {str(b["concurrency"]): b.get("avg_power_w") for b in benches},
            "accuracy": {str(b["concurrency"]): b.get("accuracy", {}).get("all", {}).get("accuracy")
                         for b in benches},
            "route_share": {str(b["concurrency"]): {a: v["requests"] for a, v in b["per_agent"].items()}
                            for b in benches},
            "planner_error_pct": planner_error_pct(e.get("memory", {})),
            "placement": placement(e.get("memory", {})),
            "per_gpu_energy": {str(b["concurrency"]): b["per_gpu"] for b in benches if b.get("per_gpu")},
            "measure": sorted({m["measure"] for m in e.get("memory", {}).get("agents", [])}),
            "all_at_once_vs_sum_alone": e.get("alone", {}).get("all_at_once_vs_sum_alone"),
            "routed_vs_sum_alone": e.get("alone", {}).get("routed_vs_sum_alone"),
            "errors": e.get("errors", []),
        }
    out = {"date": report["started"], "device": report["device"], "routed": report.get("profile") == "routed",
           "max_tokens": report["max_tokens"], "n": report["n"], "specs": specs,
           "modes": report.get("modes"), "sweep": report.get("sweep")}
    base = specs.get(report.get("baseline") or "")
    if base:
        out["baseline"] = report["baseline"]
        out["speedup_vs_one_gpu"] = {name: {c: round(t / base["tok_s"][c], 3) for c, t in e["tok_s"].items()
                                            if t and base["tok_s"].get(c)}
                                     for name, e in specs.items() if name != report["baseline"]}
    return out


def placement(memory: dict) -> dict:
    """Per agent: the GPUs it was planned on and, per GPU, [planned, measured] MiB (NVML; measured None where the
    GPU does not list the worker)."""
    out = {}
    for m in memory.get("agents", []):
        planned = {str(g): v for g, v in (m.get("planned_by_gpu_mib") or {}).items()}
        measured = {str(g): v for g, v in (m.get("measured_by_gpu_mib") or {}).items()}
        out[m["agent"]] = {"gpus": sorted(planned), "planned_vs_measured_mib": {
            g: [round(planned[g], 1), measured.get(g)] for g in sorted(set(planned) | set(measured))
            if g in planned}}
    return out


def plot(report: dict, path: Path) -> Path | None:
    """Latency percentiles per run and planned vs measured memory per agent (one PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    runs = [(f"{e['name']} c{e['bench']['concurrency']}", e["bench"]) for e in report["specs"] if "bench" in e]
    if report.get("modes_swarm"):  # the modes compare on their own, smaller workload: the swarm's run of it too
        runs.append((f"co-resident, modes workload (n={report['modes_swarm']['requests']})", report["modes_swarm"]))
    for mode in ("swap", "shared"):
        if report.get(mode):
            runs.append((f"{mode}, modes workload (n={report[mode]['requests']})", report[mode]))
    if not runs:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    keys = ("avg", "p50", "p95", "p99")
    x = np.arange(len(keys))
    w = 0.8 / len(runs)
    for i, (name, s) in enumerate(runs):
        ax1.bar(x + i * w, [s["latency_ms"][k] or 0 for k in keys], w, label=name)
    ax1.set_xticks(x + w * (len(runs) - 1) / 2, keys)
    ax1.set_ylabel("latency (ms)")
    ax1.set_title("latency through the bus")
    ax1.legend(fontsize=8)
    labels, planned, measured, kinds = [], [], [], set()
    for e in report["specs"]:
        for m in e.get("memory", {}).get("agents", []):
            kinds.add(m["measure"])
            labels.append(f"{e['name']}\n{m['agent']}")
            planned.append(m["planned_mib"])
            measured.append(m["measured_mib"] or 0)
    y = np.arange(len(labels))
    ax2.barh(y - 0.2, planned, 0.4, label="planned")
    ax2.barh(y + 0.2, measured, 0.4, label="measured")
    ax2.set_yticks(y, labels, fontsize=7)
    ax2.set_xlabel("MiB (" + ", ".join(sorted(kinds)) + "; rss is compared with planned weights+KV)")
    ax2.set_title("planned vs measured memory per agent")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def alone_study(session: BenchSession, base: dict, cfg: SwarmConfig, n: int, concurrency: int, routed: list[dict],
                log, items: list) -> dict:
    """The co-residence baseline on the loaded swarm: each agent alone (by name, ``concurrency`` clients, ``n``
    tasks, the others idle), then all agents at once (``spread``: ``concurrency`` clients per agent). Their ratio
    says what sharing the GPU costs; each routed run's tok/s is also set against the sum of the agents alone (a
    router that sends most tasks to one agent cannot reach that sum however well the GPU is shared). ``items``: the
    spec's workload, at least ``n`` x agents long (each run takes its first tasks).

    Returns ``alone`` (per agent: tok_s in generated tokens/s, p95_ms, accuracy 0-1, run_id), ``sum_alone_tok_s``,
    ``all_at_once_tok_s``, ``all_at_once_p95_ms``, ``all_at_once_vs_sum_alone`` and ``routed_vs_sum_alone`` (per
    concurrency; ratios of tok/s, unrounded sums), ``n_per_agent`` and ``concurrency_per_agent``."""
    rows, total = [], 0.0
    for name in cfg.agents:
        s = session.run(BenchConfig(**{**base, "model": name, "n": n, "concurrency": concurrency}),
                        label=f"alone-{name}", items=items[:n])
        total += s["tok_s"] or 0.0
        rows.append({"agent": name, "tok_s": s["tok_s"], "p95_ms": s["latency_ms"]["p95"],
                     "accuracy": s.get("accuracy", {}).get("all", {}).get("accuracy"), "run_id": s["run_id"]})
    k = len(cfg.agents)
    together = session.run(BenchConfig(**{**base, "model": "spread", "n": n * k, "concurrency": concurrency * k}),
                           label="all-at-once", items=items[:n * k])
    out = {"n_per_agent": n, "concurrency_per_agent": concurrency, "alone": rows, "sum_alone_tok_s": total,
           "all_at_once_tok_s": together["tok_s"], "all_at_once_p95_ms": together["latency_ms"]["p95"],
           "all_at_once_vs_sum_alone": round(together["tok_s"] / total, 3) if total and together["tok_s"] else None,
           "routed_vs_sum_alone": {str(r["concurrency"]): round(r["tok_s"] / total, 3) if total and r["tok_s"]
                                   else None for r in routed}}
    log(format_table(rows + [{"agent": "SUM alone", "tok_s": round(total, 1)},
                             {"agent": f"all at once ({concurrency} per agent)", "tok_s": together["tok_s"],
                              "p95_ms": together["latency_ms"]["p95"]}]))
    log(f"all at once / sum alone = {out['all_at_once_vs_sum_alone']}; routed / sum alone = "
        f"{out['routed_vs_sum_alone']}")
    return out


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logf = open(out / "campaign.log", "a")

    def log(msg: str) -> None:
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    report = {"preset": args.preset, "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "device": device_label(),
              "command": " ".join(["benchmarks/serving_campaign.py", *sys.argv[1:]]), "n": args.n,
              "concurrency": args.concurrency, "max_tokens": args.max_tokens, "profile": args.profile,
              "labels": args.labels, "baseline": args.baseline, "specs": [], "errors": []}

    def save() -> None:
        (out / "campaign.json").write_text(json.dumps(report, indent=2, default=str))
        (out / "campaign.md").write_text(markdown(report))
        (out / "summary.json").write_text(json.dumps(summary_json(report), indent=2, default=str))

    t_start = time.monotonic()
    for i, spec in enumerate(args.spec):
        entry: dict = {"spec": spec, "name": Path(spec).stem, "errors": []}
        report["specs"].append(entry)
        try:
            cfg = load_spec(spec, args.router_program)
        except Exception as exc:
            entry["errors"].append(f"load: {exc}")
            log(f"{spec}: {exc}")
            save()
            continue
        mon = Monitor(out / f"monitor-{entry['name']}.csv", 0.5, cfg.vram.gpu, cfg.monitor.temp_alert_c, log=log)
        with mon:
            log(f"== {entry['name']}: VRAM plan ==")
            try:
                plan = plan_only(cfg, log=log)  # makes the missing quants first
            except Exception as exc:
                entry["errors"].append(f"plan: {exc}")
                log(traceback.format_exc())
                save()
                continue
            entry["plan"] = {"summary": plan.summary(), "rows": plan_rows(cfg, plan),
                             "budget_mib": None if plan.budget_bytes is None else plan.budget_bytes / MIB,
                             "planned_vram_mib": plan.gpu_bytes / MIB, "planned_host_mib": plan.cpu_bytes / MIB}
            entry["router"] = router_note(cfg)
            entry["model"] = args.model or ("auto" if cfg.router.program else "spread")
            log(f"routing: {entry['router']['note']}; request model {entry['model']}")
            save()
            compare = i == 0 and not args.no_compare
            log(f"== {entry['name']}: {args.n} {args.profile} tasks through the bus at {args.concurrency} clients"
                f"{', each agent alone and all at once' if args.alone_n else ''}"
                f"{', then swap and shared modes at the same concurrency' if compare else ''} ==")
            base = {"n": args.n, "profile": args.profile, "model": entry["model"], "max_tokens": args.max_tokens,
                    "transport": "bus", "closed_loop": True, "results": args.results, "out": str(out),
                    "timeout_s": args.timeout_s, "labels": args.labels or "", "data_dir": args.data_dir,
                    "allow_code_execution": args.allow_code_execution, "concurrency": args.concurrency[0]}
            modes_bc = BenchConfig(**{**base, "n": args.modes_n})
            modes_swarm = None
            alone = args.alone_n and i == 0
            try:
                # the tasks, read once for every run of this spec: each run takes the first n (a workload of n is
                # the first n of a longer one with the same seed)
                need = max(args.n, args.modes_n if compare else 0, args.alone_n * len(cfg.agents) if alone else 0)
                items = workload(cfg, BenchConfig(**{**base, "n": need}), log)
                with BenchSession(cfg, log) as session:  # one load for every run of this spec
                    entry["memory"] = session.memory
                    log("planned vs measured memory after load:\n" + format_table(memory_rows(session.memory)))
                    entry["benches"] = []
                    for c in args.concurrency:
                        run = session.run(BenchConfig(**{**base, "concurrency": c}), label=f"{entry['name']}-c{c}",
                                          items=items[:args.n])
                        entry["benches"].append(run)
                        entry.setdefault("bench", run)
                        log(format_table(summary_rows(run)))
                        save()
                    if alone:
                        entry["alone"] = alone_study(session, base, cfg, args.alone_n, args.alone_concurrency,
                                                     entry["benches"], log, items)
                        save()
                    if compare:
                        modes_swarm = session.run(modes_bc, label="swarm-modes", items=items[:args.modes_n])
            except Exception as exc:
                entry["errors"].append(f"bench: {exc}")
                log(traceback.format_exc())
            save()
            if modes_swarm is not None:
                try:
                    res = compare_modes(cfg, modes_bc, log, swarm_summary=modes_swarm, items=items[:args.modes_n])
                    report["modes"], report["swap"], report["shared"] = res["modes"], res["swap"], res["shared"]
                    report["modes_swarm"] = modes_swarm
                except Exception as exc:
                    report["errors"].append(f"execution modes: {exc}")
                    log(traceback.format_exc())
                save()
            if i == 0 and not args.no_sweep:
                agent = args.sweep_agent or cfg.default_agent()
                log(f"== {entry['name']}: parallel {args.sweep_parallel} x n_ctx {args.sweep_ctx} sweep of {agent} ==")
                try:
                    sw = run_sweep(single_agent(cfg, agent), BenchConfig(
                        n=args.sweep_n, profile="short", model=agent, max_tokens=args.max_tokens, transport="http",
                        results=args.results, out=str(out), timeout_s=args.timeout_s,
                        sweep_parallel=args.sweep_parallel, sweep_ctx=args.sweep_ctx), log)
                    report["sweep"] = {"agent": agent, "n": args.sweep_n, "rows": sw["sweep"], "knees": sw["knees"],
                                       "concurrency": sw["concurrency"]}
                except Exception as exc:
                    report["errors"].append(f"sweep: {exc}")
                    log(traceback.format_exc())
                save()
        if mon.samples:
            entry["monitor_png"] = str(plot_monitor(mon.csv_path, mon.csv_path.with_suffix(".png")))
    report["wall_s"] = round(time.monotonic() - t_start, 1)
    png = plot(report, out / "campaign.png")
    report["plot"] = str(png) if png else None
    save()
    log(f"campaign ({report['wall_s']} s) -> {out / 'campaign.json'}, {out / 'campaign.md'}"
        + (f", {png}" if png else ""))
    logf.close()


if __name__ == "__main__":
    main()
