"""Build a small REAL results table for the router's CPU demonstration.

Several agents (SmolLM2-135M at Q4_1 and at Q2_K requantized from it, and Qwen2.5-Coder-0.5B Q4_K_M when fetched)
answer the same GSM8K (greedy chat, last number) and MMLU (zero-shot, next-token letter logprobs) items through
llama.cpp's llama-server. Rows go to a results table, one primary row per (agent, item), with measured latency.

    .venv/bin/python benchmarks/router_cpu_table.py --gsm8k 20 --mmlu 20 --out benchmarks/results/router_cpu/table
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import time
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm

from quantswarm.engine import GenerationParams, best_choice, open_engine
from quantswarm.loaders import load_gsm8k, load_mmlu
from quantswarm.paths import models_dir
from quantswarm.registry import fetch, inspect_gguf, sha256_file
from quantswarm.results import ResultRow, ResultsTable, new_run_id, prompt_hash, versions_json


def quantize(src: Path, dst: Path, ftype: str) -> Path:
    """Requantize a GGUF with llama.cpp (allow_requantize) unless already done."""
    import ctypes

    import llama_cpp

    if dst.exists():
        return dst
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    params.allow_requantize = True
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise SystemExit(f"quantize {src} -> {ftype} failed ({rc})")
    return dst


def last_number(text: str) -> str:
    nums = re.findall(r"-?\d[\d,]*\.?\d*", text)
    return nums[-1].replace(",", "").rstrip(".") if nums else "[invalid]"


def same_number(a: str, b: str) -> bool:
    try:
        return abs(float(a) - float(b)) < 1e-6
    except ValueError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gsm8k", type=int, default=20)
    ap.add_argument("--mmlu", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--out", default="benchmarks/results/router_cpu/table")
    args = ap.parse_args()

    base = fetch("smollm2-135m-instruct-q4_1", try_hub=False)
    agents = {"smollm2@Q2_K": (quantize(base, models_dir() / "smollm2-135m-instruct-q2_k.gguf", "Q2_K"),
                               "Q2_K from Q4_1"),
              "smollm2@Q4_1": (base, "")}
    qwen = models_dir() / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    if qwen.exists():
        agents["qwen-coder-0.5b@Q4_K_M"] = (qwen, "")
    gsm = load_gsm8k("test", limit=args.gsm8k, seed=1)
    mmlu = load_mmlu("test", limit=args.mmlu, seed=1)
    table, run_id = ResultsTable(args.out), new_run_id("routerdemo")
    device = f"cpu ({platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores)"
    versions = versions_json()
    for agent, (path, reference) in agents.items():
        info, sha = inspect_gguf(path), sha256_file(path)
        rows: list[ResultRow] = []
        with open_engine(str(path), backend="llama-server", n_ctx=1024, parallel=1) as eng:
            common = dict(run_id=run_id, agent=agent, model_file=path.name, model_sha=sha, quant=info.file_type,
                          reference=reference, backend=eng.backend, device=device, versions=versions)
            for it in tqdm(gsm, desc=f"{agent} gsm8k"):
                prompt = f"{it.question}\nSolve step by step, then end with 'The answer is N'."
                c = eng.chat([{"role": "user", "content": prompt}], GenerationParams(max_tokens=args.max_tokens))
                got = last_number(c.text)
                rows.append(ResultRow(task="gsm8k_chat_zeroshot", dataset="gsm8k", split=it.split,
                                      item_id=it.item_id, output=c.text, extracted=got, gold=it.gold,
                                      correct=same_number(got, it.gold), filter="flexible-extract",
                                      prompt=prompt, prompt_hash=prompt_hash(prompt), prompt_tokens=c.prompt_tokens,
                                      completion_tokens=c.completion_tokens, latency_ms=c.latency_ms, **common))
            for it in tqdm(mmlu, desc=f"{agent} mmlu"):
                prompt = (f"{it.question}\n" + "\n".join(f"{x}. {ch}" for x, ch in zip("ABCD", it.choices, strict=True))
                          + "\nAnswer with the letter only.")
                t0 = time.perf_counter()
                lps = eng.choice_logprobs([{"role": "user", "content": prompt}], ["A", "B", "C", "D"])
                ms = (time.perf_counter() - t0) * 1000
                got = best_choice(lps)
                rows.append(ResultRow(task="mmlu_zeroshot_logprob", dataset="mmlu", split=it.split,
                                      item_id=it.item_id, subject=it.subject, output=json.dumps(lps), extracted=got,
                                      gold=it.gold, correct=got == it.gold, filter="logprob", prompt=prompt,
                                      prompt_hash=prompt_hash(prompt), completion_tokens=1, latency_ms=ms, **common))
        table.append(rows)
        acc = sum(r.correct for r in rows) / len(rows)
        mean_ms = sum(r.latency_ms for r in rows) / len(rows)
        print(f"{agent:28} {len(rows)} rows  accuracy {acc:.2f}  mean latency {mean_ms:.0f} ms")
    meta = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": device, "run_id": run_id,
            "agents": {a: str(p.name) for a, (p, _) in agents.items()}, "gsm8k": args.gsm8k, "mmlu": args.mmlu,
            "max_tokens": args.max_tokens}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out).parent / "table_meta.json").write_text(json.dumps(meta, indent=2))
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
