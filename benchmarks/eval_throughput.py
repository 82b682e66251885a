"""Eval throughput: the runner against llama-batched-bench at the same total parallelism, in one run.

For each total parallelism P (default 16, 32, 64), on one model and one device:

* ``llama-batched-bench`` (``-npp 128 -ntg 256 -npl P``): S_TG, the generation speed of P sequences decoded in
  lockstep with no sampling, HTTP or scoring: the ceiling a serving stack can approach;
* the eval runner (``evals.runner.run_eval`` on GSM8K test items, greedy, ``--max-tokens`` 256, ``items-per-slot x
  P`` items) in the layouts of ``--layouts``: ``1xP`` (one llama-server with P slots), ``Rx16`` (R = P/16 servers
  of 16 slots, items spread over them by least-busy dispatch), each optionally with ``+bs`` (llama-server
  ``--backend-sampling``: the sampler runs on the GPU) and ``@0.1`` (the servers spread over GPUs 0 and 1, each
  whole on one: ``Rx16@0`` vs ``Rx16@0.1`` is the speed-up of a second GPU).

Generated tok/s of a runner layout = completion tokens / the block's wall time (engine start excluded). Outputs of
two greedy layouts are compared item by item: ``off_vs_off`` (two CPU-sampling layouts) is the noise floor of
batched greedy decoding, against which ``+bs`` vs its CPU-sampling twin is read.

    python benchmarks/eval_throughput.py --model qwen2.5-coder-0.5b-instruct-q4_k_m --data-dir DATA \\
        --out benchmarks/results/gpu/DATE-h200-eval-throughput

Writes ``summary.json`` (``tok_s`` and ``ratio_vs_batched_bench`` per P: the best runner layout, ``gpu``, ``date``,
every layout's figures), ``table.md`` and ``batched-bench.txt`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evals.eval_config import EvalConfig  # noqa: E402
from evals.runner import run_eval  # noqa: E402
from quantswarm.energy import device_label  # noqa: E402
from quantswarm.engine.build import require_tool  # noqa: E402
from quantswarm.errors import QuantswarmError  # noqa: E402
from quantswarm.registry import resolve_model, sha256_file  # noqa: E402
from quantswarm.results import ResultsTable  # noqa: E402
from quantswarm.text_table import markdown_table  # noqa: E402

TASK = "gsm8k_cot_zeroshot"
ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|" + r"\s*([\d.]+)\s*\|" * 6)


def parse_batched_bench(text: str) -> dict[int, dict[str, float]]:
    """llama-batched-bench's table → {B (parallel sequences): {pp, tg, n_kv, t_pp, s_pp, t_tg, s_tg, t, s}}
    (times in s, speeds in tok/s). Raises ValueError when the output holds no table row."""
    out = {}
    for line in text.splitlines():
        m = ROW.match(line.strip())
        if m:
            pp, tg, b, n_kv = (int(x) for x in m.groups()[:4])
            t_pp, s_pp, t_tg, s_tg, t, s = (float(x) for x in m.groups()[4:])
            out[b] = {"pp": pp, "tg": tg, "n_kv": n_kv, "t_pp": t_pp, "s_pp": s_pp, "t_tg": t_tg, "s_tg": s_tg,
                      "t": t, "s": s}
    if not out:
        raise ValueError(f"no result rows in llama-batched-bench's output: {text.strip()[-300:]}")
    return out


def batched_bench(model: Path, ps: list[int], npp: int, ntg: int, n_gpu_layers: int, threads: int | None) -> tuple:
    """Run llama-batched-bench once for every P; returns (parsed rows, raw output, command)."""
    cmd = [str(require_tool("llama-batched-bench")), "-m", str(model), "-c", str(max(ps) * (npp + ntg) + 256),
           "-b", "2048", "-ub", "512", "-npp", str(npp), "-ntg", str(ntg), "-npl", ",".join(map(str, ps)),
           "-ngl", str(n_gpu_layers)] + (["-t", str(threads)] if threads else [])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    text = r.stdout + r.stderr
    if r.returncode != 0:
        raise RuntimeError(f"llama-batched-bench exited {r.returncode}: {text.strip()[-400:]}")
    return parse_batched_bench(text), text, cmd


def parse_layout(name: str, p: int) -> tuple[int, int, bool, tuple[int, ...]]:
    """``1xP`` / ``Rx16`` / ``...+bs`` / ``...@0,1`` → (replicas, slots per replica, backend sampling, GPUs the
    replicas are spread over: each whole on one, in turn) for total parallelism p; ValueError for anything else."""
    m = re.fullmatch(r"(1xP|Rx(\d+))(\+bs)?(@\d+(?:\.\d+)*)?", name)
    slots = int(m.group(2)) if m and m.group(2) else 0
    gpus = tuple(int(g) for g in m.group(4)[1:].split(".")) if m and m.group(4) else ()
    if not m or (m.group(2) and (slots < 1 or p % slots)) or len(set(gpus)) != len(gpus):
        raise ValueError(f"layout {name!r}: use 1xP or RxS (S >= 1 dividing every P), optionally +bs, optionally "
                         "@G.G (distinct GPUs to spread the servers over, e.g. Rx16@0.1)")
    bs = bool(m.group(3))
    return (1, p, bs, gpus) if m.group(1) == "1xP" else (p // slots, slots, bs, gpus)


def runner(model: Path, p: int, layout: str, args, work: Path) -> dict:
    replicas, slots, bs, gpus = parse_layout(layout, p)
    res = work / f"p{p}-{layout}"
    shutil.rmtree(res, ignore_errors=True)
    cfg = EvalConfig(models=[f"bench={model}"], tasks=[TASK], limit=args.items_per_slot * p, seed=0,
                     results=str(res), backend="llama-server", parallel=slots, replicas=replicas, gpus=list(gpus),
                     backend_sampling=bs, n_ctx=args.n_ctx, n_gpu_layers=args.n_gpu_layers, n_threads=args.threads,
                     data_dir=args.data_dir, max_tokens=args.max_tokens, progress=False,
                     run_id=f"throughput-p{p}-{layout}")
    t0 = time.time()
    run_eval(cfg)
    block = json.loads((res / "blocks.jsonl").read_text().splitlines()[-1])
    frame = ResultsTable(res).read(source="eval")
    prim = frame[frame.primary]
    wall = block["wall_s"]
    return {"p": p, "layout": layout, "replicas": replicas, "slots": slots, "backend_sampling": bs, "gpus": list(gpus),
            "items": int(block["items"]), "wall_s": round(wall, 2), "load_and_wall_s": round(time.time() - t0, 2),
            "completion_tokens": int(block["completion_tokens"]), "tok_s": block["completion_tokens"] / wall,
            "accuracy": float(prim.correct.mean()), "joules": block.get("joules"),
            "outputs": dict(zip(prim.item_id, prim.output, strict=True))}


def identical(a: dict, b: dict) -> float:
    keys = set(a["outputs"]) & set(b["outputs"])
    return sum(a["outputs"][k] == b["outputs"][k] for k in keys) / max(1, len(keys))


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and every option's default."""


def main(argv: list[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except (ValueError, QuantswarmError) as exc:  # bad input: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=_Help)
    ap.add_argument("--model", default="smollm2-135m-instruct-q4_1", help="GGUF path or catalogue name")
    ap.add_argument("--p", default="16,32,64", help="total parallelism values (comma-separated)")
    ap.add_argument("--layouts", default="1xP,Rx16,Rx16+bs",
                    help="runner layouts (1xP, RxS, +bs, @G.G: GPUs to spread the servers over)")
    ap.add_argument("--items-per-slot", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--npp", type=int, default=128, help="batched-bench prompt tokens per sequence")
    ap.add_argument("--n-ctx", type=int, default=1024, help="context tokens per slot of the runner's servers")
    ap.add_argument("--n-gpu-layers", type=int, default=-1)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads per llama.cpp process")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", required=True, help="results folder")
    args = ap.parse_args(argv)

    try:
        ps = [int(x) for x in args.p.split(",")]
    except ValueError:
        raise ValueError(f"--p {args.p!r}: comma-separated whole numbers, e.g. 16,32,64") from None
    if not ps or min(ps) < 1:
        raise ValueError(f"--p {args.p!r}: every parallelism must be >= 1")
    layouts = [x for x in args.layouts.split(",") if x]
    if not layouts:
        raise ValueError("--layouts is empty: give e.g. 1xP,Rx16,Rx16+bs")
    model = resolve_model(args.model)
    for p in ps:
        for layout in layouts:
            parse_layout(layout, p)  # a bad layout fails before anything runs
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bench, raw, cmd = batched_bench(model, ps, args.npp, args.max_tokens, args.n_gpu_layers, args.threads)
    (out / "batched-bench.txt").write_text(" ".join(cmd) + "\n\n" + raw)
    work = Path(tempfile.mkdtemp(prefix="eval-throughput-"))
    rows = []
    try:
        for p in ps:
            shapes = set()
            for layout in layouts:
                if parse_layout(layout, p) in shapes:  # e.g. 1xP and Rx16 at P=16: one server of 16 slots
                    continue
                shapes.add(parse_layout(layout, p))
                r = runner(model, p, layout, args, work)
                r["ratio_vs_batched_bench"] = r["tok_s"] / bench[p]["s_tg"]
                rows.append(r)
                print(f"P={p} {layout}: {r['tok_s']:.0f} tok/s = {r['ratio_vs_batched_bench']:.2f}x batched-bench "
                      f"S_TG {bench[p]['s_tg']:.0f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    agreement = {}
    for p in ps:
        at = {r["layout"]: r for r in rows if r["p"] == p}
        off = [r for r in at.values() if not r["backend_sampling"]]
        if len(off) >= 2:
            agreement[f"p{p}_off_vs_off"] = identical(off[0], off[1])
        for name, r in at.items():
            twin = at.get(name.removesuffix("+bs"))
            if r["backend_sampling"] and twin:
                agreement[f"p{p}_{name}_vs_{twin['layout']}"] = identical(r, twin)
    best = {p: max((r for r in rows if r["p"] == p), key=lambda r: r["tok_s"]) for p in ps}
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "gpu": device_label(),
        "model": model.name, "model_sha256": sha256_file(model), "task": TASK, "data_dir": args.data_dir,
        "items_per_slot": args.items_per_slot, "max_tokens": args.max_tokens, "npp": args.npp,
        "batched_bench_s_tg": {p: bench[p]["s_tg"] for p in ps},
        "tok_s": {p: best[p]["tok_s"] for p in ps}, "best_layout": {p: best[p]["layout"] for p in ps},
        "ratio_vs_batched_bench": {p: best[p]["ratio_vs_batched_bench"] for p in ps},
        "identical_outputs": agreement,
        "layouts": [{k: v for k, v in r.items() if k != "outputs"} for r in rows],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = [{"P": r["p"], "layout": r["layout"], "servers x slots": f"{r['replicas']} x {r['slots']}",
              "items": r["items"], "gen tokens": r["completion_tokens"], "wall s": f"{r['wall_s']:.1f}",
              "tok/s": f"{r['tok_s']:.0f}", "batched-bench S_TG": f"{bench[r['p']]['s_tg']:.0f}",
              "ratio": f"{r['ratio_vs_batched_bench']:.2f}", "accuracy": f"{r['accuracy']:.3f}"} for r in rows]
    md = markdown_table(table)
    (out / "table.md").write_text(f"# Eval throughput, {model.name}, {summary['gpu']}, {summary['date']}\n\n{md}\n\n"
                                  f"Identical greedy outputs: {json.dumps(agreement)}\n")
    print(md)
    print(f"identical outputs: {agreement}\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
