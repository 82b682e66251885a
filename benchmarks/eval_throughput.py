"""Eval throughput: the project's concurrent runner vs a sequential client, same model, same GSM8K items.

Runs the same N GSM8K items (seeded subset, greedy) twice through ``evals.runner.run_eval``:
once with the llama-server backend and ``--parallel`` slots (continuous batching, as many client
threads), once with the in-process llama-cpp-python backend and one context (a sequential
client). Prints a table (items/s, generated tok/s, their ratios) and writes JSON.

    .venv/bin/python benchmarks/eval_throughput.py --model PATH.gguf --items 64 --parallel 16 \
        --data-dir DATA --out benchmarks/results/eval_throughput-gpu.json

Wall time counts the answering of the items only (the runner's block wall time, engine start
excluded); the engine's load time is given apart.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from evals.eval_config import EvalConfig
from evals.runner import run_eval
from quantswarm.energy import device_label
from quantswarm.registry import resolve_model, sha256_file
from quantswarm.results import ResultsTable

REPO = Path(__file__).resolve().parent.parent
TASK = "gsm8k_cot_zeroshot"


def _mode(name: str, model: Path, args, backend: str, parallel: int, results: Path) -> dict:
    cfg = EvalConfig(models=[f"{name}={model}"], tasks=[TASK], limit=args.items, seed=args.seed,
                     results=str(results), backend=backend, parallel=parallel, n_ctx=args.n_ctx,
                     n_gpu_layers=args.n_gpu_layers, data_dir=args.data_dir, max_tokens=args.max_tokens,
                     run_id=f"throughput-{name}")
    t0 = time.time()
    run_eval(cfg)
    total = time.time() - t0
    block = json.loads((results / "blocks.jsonl").read_text().splitlines()[-1])
    frame = ResultsTable(results).read(source="eval")
    prim = frame[frame.primary]
    wall = block["wall_s"]
    return {
        "mode": name, "backend": backend, "parallel": parallel, "items": int(block["items"]),
        "wall_s": wall, "load_and_wall_s": round(total, 3), "completion_tokens": int(block["completion_tokens"]),
        "items_per_s": block["items"] / wall, "gen_tok_per_s": block["completion_tokens"] / wall,
        "accuracy": float(prim.correct.mean()), "joules": block.get("joules"),
        "peak_vram_mib": block.get("peak_vram_mib"),
        "outputs": dict(zip(prim.item_id, prim.output, strict=True)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct-q4_1", help="GGUF path or catalogue name")
    ap.add_argument("--items", type=int, default=64)
    ap.add_argument("--parallel", type=int, default=16, help="server slots and client threads of the runner")
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--n-gpu-layers", type=int, default=-1)
    ap.add_argument("--max-tokens", type=int, default=None, help="override the task's max_tokens (320)")
    ap.add_argument("--sequential-backend", default="llama-cpp-python", choices=["llama-cpp-python", "llama-server"],
                    help="backend of the sequential client (one context, or one server slot)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--work", default=None, help="scratch results folder (default: a temp dir, removed)")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/eval_throughput.json"))
    args = ap.parse_args()

    model = resolve_model(args.model)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="eval-throughput-"))
    for sub in ("runner", "sequential"):
        shutil.rmtree(work / sub, ignore_errors=True)
    try:
        runner = _mode("runner", model, args, "llama-server", args.parallel, work / "runner")
        seq = _mode("sequential", model, args, args.sequential_backend, 1, work / "sequential")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    same = sum(runner["outputs"].get(k) == v for k, v in seq["outputs"].items())
    ratio_items = runner["items_per_s"] / seq["items_per_s"]
    ratio_tok = runner["gen_tok_per_s"] / seq["gen_tok_per_s"]
    rows = [runner, seq]
    print(f"model {model.name}  items {args.items}  device {device_label()}")
    print(f"{'mode':12} {'backend':17} {'par':>4} {'items':>6} {'wall_s':>8} {'items/s':>8} {'gen tok':>8} "
          f"{'tok/s':>8} {'acc':>6}")
    for r in rows:
        print(f"{r['mode']:12} {r['backend']:17} {r['parallel']:>4} {r['items']:>6} {r['wall_s']:>8.1f} "
              f"{r['items_per_s']:>8.3f} {r['completion_tokens']:>8} {r['gen_tok_per_s']:>8.1f} {r['accuracy']:>6.3f}")
    print(f"ratio runner/sequential: items/s x{ratio_items:.2f}, generated tok/s x{ratio_tok:.2f}; "
          f"identical outputs {same}/{len(seq['outputs'])}")
    report = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "device": device_label(),
        "model": model.name, "model_sha256": sha256_file(model), "task": TASK, "items": args.items,
        "seed": args.seed, "n_ctx": args.n_ctx, "n_gpu_layers": args.n_gpu_layers,
        "modes": [{k: v for k, v in r.items() if k != "outputs"} for r in rows],
        "ratio_items_per_s": ratio_items, "ratio_gen_tok_per_s": ratio_tok,
        "identical_outputs": same, "compared_outputs": len(seq["outputs"]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
