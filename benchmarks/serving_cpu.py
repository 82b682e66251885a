"""CPU serving campaign on the 3-agent SmolLM2 demo swarm: load bench over HTTP and the bus, the execution-mode
comparison, and a parallel-slots x n_ctx sweep. Prints tables; per-request rows go to the results table
(source="bench") and summaries to benchmarks/results/serving-*.json.

    .venv/bin/python benchmarks/serving_cpu.py [--n 100] [--sweep-n 40] [--results runs/results]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from serving.bench import BenchConfig, run_bench, run_sweep
from serving.swarm_config import load_swarm

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", default=str(REPO / "data/swarms/cpu-demo.yaml"))
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=5)
    ap.add_argument("--sweep-n", type=int, default=40)
    ap.add_argument("--results", default="runs/results")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results"))
    args = ap.parse_args()
    cfg = load_swarm(args.spec)
    base = {"n": args.n, "concurrency": args.concurrency, "max_tokens": 16, "results": args.results, "out": args.out}
    report = {}
    print("== HTTP gateway, mixed workload, co-resident swarm vs sequential single model ==")
    report["http"] = run_bench(cfg, BenchConfig(**base, profile="mixed", transport="http", model="spread",
                                                compare_modes=True))
    print("== HTTP gateway, mixed workload, model=auto (default-agent routing: no compiled program in the spec) ==")
    report["auto"] = run_bench(cfg, BenchConfig(**base, profile="mixed", transport="http"))
    print("== NATS JetStream bus, mixed workload ==")
    report["bus"] = run_bench(cfg, BenchConfig(**base, profile="mixed", transport="bus", model="spread"))
    print("== tool-storm bursts over HTTP (10 at once, 5 bursts/s budget) ==")
    report["toolstorm"] = run_bench(cfg, BenchConfig(**{**base, "n": 50}, profile="toolstorm", rate=20.0,
                                                     model="spread"))
    print("== capacity sweep: parallel slots x n_ctx (short chat) ==")
    report["sweep"] = run_sweep(cfg, BenchConfig(**{**base, "n": args.sweep_n}, profile="short", model="spread",
                                                 sweep_parallel=[1, 2, 4], sweep_ctx=[256, 512]))
    out = Path(args.out) / f"serving-cpu-campaign-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"campaign -> {out}")


if __name__ == "__main__":
    main()
