"""The learning jobs measured end to end in one run: router labels + routers, and the DPO repair.

    python benchmarks/gpu_campaign.py --preset h200 --out runs/campaign      # on the GPU machine
    python benchmarks/gpu_campaign.py --preset cpu  --out runs/campaign-cpu  # the same flow, tiny, on a CPU

Stages (each logged with its wall time; a stage that fails is recorded in ``status.json`` and the others go on):

1. **swarm** — the reference swarm's GGUFs: SmolLM2-135M Q4_1, Qwen2.5-Coder-0.5B Q4_K_M, and Qwen2.5-Coder-1.5B's
   F16 (dequantized from the published Q4_K_M), Q4_K_M, Q3_K_M and Q2_K (llama-quantize from that F16).
2. **energy** — each agent alone on the GPU (NVML energy counter over the block): J per generated token (GSM8K)
   and J per log-probability item (MMLU) → ``energy_costs.json``, the router's cost model.
3. **labels** — every agent on the task mix (GSM8K, MMLU, HumanEval pass@1, the generated easy family), k answers
   per item with seeded sampling, all agents at once; rows into one results table.
4. **repair** (beside 3) — ``repair.pipeline.run_repair`` on the 1.5B at ``--repair-quant``: mine train failures,
   verified reference pairs, DPO+NLL (RPO) LoRA on the quantized weights, GGUF LoRA and merged deployments, proof
   on GSM8K test + MMLU.
5. **router** — labels (p(success) >= tau, energy cost), DSPy programs compiled by several optimizers with two
   router LMs and two structures, baselines (random, always-*, TF-IDF+LR, TF-IDF kNN, router-LM-embedding kNN,
   oracle), all on one held-out split; decision latency of each program; ``router/summary.json`` + report + PNG.

Everything lands under ``--out``; ``meta.json`` holds the date, GPU, driver, llama.cpp build and model shas.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PRESETS = {
    "h200": {
        "n_gsm8k": 250, "n_mmlu": 250, "n_humaneval": 164, "n_easy": 250, "repeats": 3, "temperature": 0.7,
        "parallel": 16, "replicas": 2, "n_threads": 2, "label_max_tokens": 384, "cal_items": 64,
        "repair_train_items": 1000, "repair_eval_items": 1000, "repair_mmlu_items": 1000, "repair_parallel": 32,
        "repair_replicas": 2, "repair_max_minutes": 3.0, "repair_k": 3, "repair_max_tokens": 512,
        "repair_gold_fallback": False,
        "train_frac": 0.27, "dev_frac": 0.07, "max_train": 48, "max_dev": 32, "latency_items": 200,
        "compiles": [("smollm2", "labeled", "agent", "name"), ("smollm2", "bootstrap_rs", "agent", "index"),
                     ("smollm2", "mipro", "kind", "name"), ("smollm2", "gepa", "kind", "name"),
                     ("qwen05", "mipro", "agent", "name"), ("qwen05", "labeled", "kind", "name")],
    },
    "cpu": {
        "n_gsm8k": 6, "n_mmlu": 8, "n_humaneval": 4, "n_easy": 12, "repeats": 2, "temperature": 0.7,
        "parallel": 2, "replicas": 1, "n_threads": 1, "label_max_tokens": 48, "cal_items": 2,
        "repair_train_items": 10, "repair_eval_items": 4, "repair_mmlu_items": 4, "repair_parallel": 2,
        "repair_replicas": 1, "repair_max_minutes": 1.0, "repair_k": 2, "repair_max_tokens": 200,
        "repair_gold_fallback": True,
        "train_frac": 0.4, "dev_frac": 0.2, "max_train": 6, "max_dev": 4, "latency_items": 5,
        "compiles": [("smollm2", "labeled", "agent", "name"), ("smollm2", "labeled", "kind", "name")],
    },
}
TASKS = {"gsm8k": "gsm8k_cot_zeroshot", "mmlu": "mmlu_logprob", "humaneval": "humaneval_pass1", "easy": "easy_oneshot"}
LOCK = threading.Lock()


def log(msg: str) -> None:
    with LOCK:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Campaign:
    def __init__(self, preset: str, out: Path, args):
        self.p = dict(PRESETS[preset])
        self.preset, self.out, self.args = preset, out, args
        self.out.mkdir(parents=True, exist_ok=True)
        self.status: dict[str, dict] = {}
        self.results = str(out / "results")
        self.agents: dict[str, str] = {}

    def stage(self, name: str, fn, *a, **kw):
        t0 = time.monotonic()
        log(f"== {name} start")
        try:
            value = fn(*a, **kw)
            self.status[name] = {"ok": True, "seconds": round(time.monotonic() - t0, 1)}
            log(f"== {name} done in {time.monotonic() - t0:.0f} s")
            return value
        except Exception as exc:  # noqa: BLE001 - every stage's failure is recorded, the others go on (Ctrl-C stops the run)
            self.status[name] = {"ok": False, "seconds": round(time.monotonic() - t0, 1),
                                 "error": f"{type(exc).__name__}: {exc}"[:2000]}
            log(f"== {name} FAILED after {time.monotonic() - t0:.0f} s: {type(exc).__name__}: {exc}")
            traceback.print_exc()
            return None
        finally:
            (self.out / "status.json").write_text(json.dumps(self.status, indent=2) + "\n")

    # --- 1. swarm ------------------------------------------------------------------------------------------
    def swarm(self) -> dict[str, str]:
        from evals.ladder import quantize
        from quantswarm.registry import resolve_model

        models = self.out / "models"
        models.mkdir(exist_ok=True)
        if self.preset == "cpu":
            # one model at three precisions stands in for the heterogeneous swarm
            small = str(resolve_model(self.args.smollm2))
            f16 = models / "smollm2-F16.gguf"
            if not f16.exists():
                quantize(small, f16, "F16")
            q2 = models / "smollm2-Q2_K.gguf"
            if not q2.exists():
                quantize(f16, q2, "Q2_K")
            self.agents = {"smollm2": small, "smollm2-q2k": str(q2), "smollm2-f16": str(f16)}
            self.router_models = {"smollm2": small}
            self.repair_reference = str(f16)
            return self.agents
        q4 = str(resolve_model(self.args.qwen15))
        f16 = models / "qwen15-F16.gguf"
        if not f16.exists():
            quantize(q4, f16, "F16")
        self.repair_reference = str(f16)
        if not set(self.args.stages.split(",")) & {"energy", "labels", "router"}:
            # the repair alone needs only the 1.5B's F16 (it quantizes its own agent): no other model is loaded
            self.agents = {"qwen15-q4km": q4, "qwen15-f16": str(f16)}
            self.router_models = {}
            return self.agents
        rungs = {}
        for q in ("Q3_K_M", "Q2_K"):
            rungs[q] = models / f"qwen15-{q}.gguf"
            if not rungs[q].exists():
                quantize(f16, rungs[q], q)
        small, qwen05 = str(resolve_model(self.args.smollm2)), str(resolve_model(self.args.qwen05))
        self.agents = {"smollm2": small, "qwen05": qwen05, "qwen15-q2k": str(rungs["Q2_K"]),
                       "qwen15-q3km": str(rungs["Q3_K_M"]), "qwen15-q4km": q4, "qwen15-f16": str(f16)}
        self.router_models = {"smollm2": small, "qwen05": qwen05}
        return self.agents

    def meta(self) -> dict:
        from quantswarm.energy import device_label
        from quantswarm.engine.build import find_tool
        from quantswarm.registry import sha256_file
        from quantswarm.results import package_versions

        driver = ""
        try:  # one driver for the machine (nvidia-smi would list it once per GPU, visible or not)
            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=20).stdout.split("\n")[0].strip()
        except (OSError, subprocess.SubprocessError):
            pass
        commit = ""
        try:  # the code that ran (the device gets the working tree; QUANTSWARM_COMMIT when it has no .git)
            commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=20,
                                    cwd=ROOT).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
        commit = commit or os.environ.get("QUANTSWARM_COMMIT", "unknown")
        server = find_tool("llama-server")
        build = ""
        if server:
            r = subprocess.run([str(server), "--version"], capture_output=True, text=True, timeout=30)
            build = " ".join((r.stdout + r.stderr).split())[-160:]
        meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "gpu": device_label(),
                "driver": driver, "llama_cpp_build": build, "preset": self.preset, "quantswarm_commit": commit,
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "versions": package_versions(
                    ("torch", "transformers", "trl", "peft", "dspy", "gguf", "numpy"), missing="not installed"),
                "models": {a: {"file": Path(p).name, "sha256": sha256_file(p, None)} for a, p in self.agents.items()},
                "data_dir": self.args.data_dir,
                "reference_note": "F16 references are dequantized from the published quantized GGUF (no FP16 "
                                  "original is reachable here)", "preset_values": {k: v for k, v in self.p.items()}}
        (self.out / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        return meta

    # --- 2. energy -----------------------------------------------------------------------------------------
    def energy(self) -> dict:
        from evals.eval_config import EvalConfig
        from evals.runner import run_eval

        cal = str(self.out / "calibration")
        n = self.p["cal_items"]
        for agent, path in self.agents.items():  # one at a time: the energy counter is the whole GPU's
            run_eval(EvalConfig(models=[f"{agent}={path}"], tasks=[TASKS["gsm8k"], TASKS["mmlu"]], limit=n,
                                parallel=self.p["parallel"], replicas=self.p["replicas"], results=cal,
                                n_threads=self.p["n_threads"],
                                data_dir=self.args.data_dir or None, max_tokens=self.p["label_max_tokens"],
                                progress=False, backend="llama-server", run_id=f"calibration-{agent}"))
        costs = {}
        for line in (Path(cal) / "blocks.jsonl").read_text().splitlines():
            b = json.loads(line)
            c = costs.setdefault(b["agent"], {"j_per_prompt_token": 0.0, "j_per_gen_token": float("nan"),
                                              "j_per_logprob_item": float("nan")})
            if b["joules"] is None:
                continue
            if b["task"] == TASKS["gsm8k"]:
                c["j_per_gen_token"] = b["joules"] / max(1, b["completion_tokens"])
                c["gen_tok_s"] = b["completion_tokens"] / max(b["wall_s"], 1e-9)
            else:
                c["j_per_logprob_item"] = b["joules"] / max(1, b["items"])
        out = {"agents": costs, "method": "each agent alone on the GPU, NVML energy over a block of "
                                          f"{n} GSM8K train items (J per generated token) and {n} MMLU items "
                                          "(J per log-probability item)"}
        (self.out / "energy_costs.json").write_text(json.dumps(out, indent=2) + "\n")
        return out

    # --- 3. labels -----------------------------------------------------------------------------------------
    def labels(self) -> None:
        from evals.eval_config import EvalConfig
        from evals.runner import run_eval

        limits = {TASKS["gsm8k"]: self.p["n_gsm8k"], TASKS["mmlu"]: self.p["n_mmlu"],
                  TASKS["humaneval"]: self.p["n_humaneval"], TASKS["easy"]: self.p["n_easy"]}

        def one(agent: str, path: str) -> None:
            run_eval(EvalConfig(models=[f"{agent}={path}"], tasks=list(limits), task_limits=limits,
                                repeats=self.p["repeats"], temperature=self.p["temperature"], top_p=0.95,
                                parallel=self.p["parallel"], replicas=self.p["replicas"], results=self.results,
                                n_threads=self.p["n_threads"],
                                data_dir=self.args.data_dir or None, max_tokens=self.p["label_max_tokens"],
                                allow_code_execution=True, progress=False, backend="llama-server"))
            log(f"labels: {agent} done")

        with ThreadPoolExecutor(len(self.agents)) as pool:
            for f in [pool.submit(one, a, p) for a, p in self.agents.items()]:
                f.result()

    # --- 4. repair -----------------------------------------------------------------------------------------
    def repair(self) -> dict:
        """The repair pipeline's stages, with one set of pairs and several training configurations, pipelined on
        one GPU: before and reference are evaluated on the held-out items while the failures are mined and the
        quantized weights dequantized; each trained adapter is exported (GGUF LoRA over the unchanged quantized
        GGUF; the first also merged and requantized) and evaluated while the next one trains. All deployments are
        then compared against before and reference on the same items (``repair.prove``)."""
        from dataclasses import asdict, replace

        from quantswarm.registry import inspect_gguf
        from quantswarm.results import new_run_id
        from repair.dpo_trainer import train_dpo
        from repair.export import export_repaired
        from repair.pipeline import announce_schedule, degraded_agent, mine_and_pair, training_weights, write_summary
        from repair.prove import RepairReport, evaluate_deployment, prove, verdict_all
        from repair.repair_config import RepairConfig

        rlog = lambda m: log(f"repair: {m}")  # noqa: E731
        ref = Path(self.repair_reference)
        p = self.p
        cfg = RepairConfig(
            agent=str(ref), quant=self.args.repair_quant, out_dir=str(self.out / "repair"),
            backend="llama-server", data_dir=self.args.data_dir or "", train_items=p["repair_train_items"],
            samples_k=p["repair_k"], sample_temperature=0.7, gold_fallback=p["repair_gold_fallback"],
            max_tokens=p["repair_max_tokens"],
            loss_type="sigmoid,sft", beta=0.1, learning_rate=5e-5, epochs=2.0, batch_size=8, grad_accum=2,
            max_minutes=p["repair_max_minutes"], eval_items=p["repair_eval_items"],
            mmlu_items=p["repair_mmlu_items"], parallel=p["repair_parallel"], warmup_ratio=0.1,
            replicas=p["repair_replicas"], n_threads=p["n_threads"], max_length=1024, n_ctx=2048,
            deploy="both", train_on="quantized")
        stem = ref.name.removesuffix(".gguf")
        agent = degraded_agent(cfg, ref, stem, rlog)
        before = f"{stem}@{cfg.quant}"
        run_id = new_run_id("repair-prove")
        models: dict[str, tuple] = {"before": (before, str(agent)),
                                    "reference": (f"{stem}@{inspect_gguf(ref).file_type}", str(ref))}
        pool = ThreadPoolExecutor(8)
        jobs: dict[str, object] = {}

        def evaluate(role: str) -> None:
            agent_name, path, *lora = models[role]
            t0 = time.monotonic()
            evaluate_deployment(cfg, agent_name, path, lora[0] if lora else None, run_id, progress=False)
            rlog(f"proof rows of {role} done in {time.monotonic() - t0:.0f} s")

        for role in ("before", "reference"):  # independent of the training: they share the GPU with the mining
            jobs[role] = pool.submit(evaluate, role)
        weights = pool.submit(training_weights, cfg, ref, agent, rlog)
        try:
            pairs = mine_and_pair(cfg, before, agent, ref, rlog)
            rlog(f"pairs: {json.dumps(pairs.summary())}")
            base_dir = weights.result()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        variants = {"rpo": cfg, "sft": replace(cfg, loss_type="sft", learning_rate=1e-4),
                    "dpo": replace(cfg, loss_type="sigmoid")}
        training, files = {}, {}

        def export_and_evaluate(name: str) -> None:
            f = export_repaired(base_dir, cfg.out / f"adapter-{name}", cfg.out / f"export-{name}", f"{stem}-{name}",
                                cfg.quant, merged=name == "rpo", log=rlog)
            files[name] = {k: str(v) for k, v in f.items()}
            roles = [f"{name}_lora"]
            models[f"{name}_lora"] = (f"{stem}-{name}-lora@{cfg.quant}", str(agent), str(f["lora"]))
            if "quant" in f:
                models[f"{name}_merged"] = (f"{stem}-{name}-merged@{cfg.quant}", str(f["quant"]))
                roles.append(f"{name}_merged")
            with ThreadPoolExecutor(len(roles)) as inner:
                for fut in [inner.submit(evaluate, r) for r in roles]:
                    fut.result()

        failed: dict[str, str] = {}

        def failure(name: str, exc: Exception) -> None:
            failed[name] = f"{type(exc).__name__}: {exc}"[:500]
            rlog(f"{name} FAILED: {failed[name]}")

        try:
            for name, vcfg in variants.items():
                announce_schedule(vcfg, len(pairs.pairs), rlog)
                try:
                    t = train_dpo(vcfg, pairs, base_dir, cfg.out / f"adapter-{name}", log=rlog)
                except Exception as exc:  # noqa: BLE001 - one configuration's failure leaves the others to try
                    failure(name, exc)
                    continue
                t.save(cfg.out / f"train_result-{name}.json")
                training[name] = {k: v for k, v in asdict(t).items() if k != "history"} | {
                    "loss_type": vcfg.loss_type, "learning_rate": vcfg.learning_rate, "beta": vcfg.beta,
                    "epochs": vcfg.epochs}
                jobs[name] = pool.submit(export_and_evaluate, name)
            for name, job in jobs.items():
                try:
                    job.result()
                except Exception as exc:  # noqa: BLE001 - one deployment's failure leaves the others to compare
                    failure(name, exc)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        if "before" in failed or "reference" in failed:
            raise RuntimeError(f"the proof's baselines failed: {failed}")
        order = ["before"] + [r for r in models if r not in ("before", "reference")] + ["reference"]
        models = {r: models[r] for r in order if not any(r.startswith(f) for f in failed)}
        gsm, mmlu = prove(cfg, models, run_id, log=rlog, progress=False)  # every row is there: compares only
        report = RepairReport(agent=stem, quant=cfg.quant, models={r: " + ".join(m[1:]) for r, m in models.items()},
                              gsm8k=gsm, mmlu=mmlu, pairs=pairs.summary(), training=training,
                              files={"results": cfg.results, **{f"{k}_{n}": v for k, d in files.items()
                                                                 for n, v in d.items()}},
                              verdict=verdict_all(gsm, mmlu))
        report.save(cfg.out)
        summary = write_summary(report, cfg, cfg.out / "summary.json")
        if failed:
            (cfg.out / "failed.json").write_text(json.dumps(failed, indent=2) + "\n")
        rlog(report.verdict)
        return {"verdict": report.verdict, "deploy": summary["deploy"], "failed": failed}

    # --- 5. router -----------------------------------------------------------------------------------------
    def router(self) -> dict:
        from router.baselines import (
            ConstantRouter,
            KnnTauRouter,
            OracleRouter,
            RandomRouter,
            TfidfRouter,
            llama_embedder,
        )
        from router.compiler import compile_router
        from router.frontier import evaluate_decisions, write_report
        from router.labels import labels_from_results, split_examples
        from router.program import load_router
        from router.router_config import RouterConfig
        from router.router_lm import start_router_server

        p = self.p
        cost_file = str(self.out / "energy_costs.json")
        try:
            costs = json.loads(Path(cost_file).read_text())["agents"]
            measured = all(v["j_per_gen_token"] == v["j_per_gen_token"] for v in costs.values())  # no NaN
        except (OSError, KeyError, ValueError):
            measured = False
        if not measured:
            log("router: NO energy calibration (no NVML here, or the energy stage failed): cost basis falls back "
                "to the rows' latency x power_w; the report's cost unit says so")
            cost_file = ""
        base = dict(results=self.results, cost_file=cost_file, tau=self.args.tau,
                    train_frac=p["train_frac"], dev_frac=p["dev_frac"], max_train=p["max_train"],
                    max_dev=p["max_dev"], num_threads=8 if self.preset == "h200" else 2)
        data = labels_from_results(self.results, tau=self.args.tau, cost_file=cost_file)
        swarm = data.swarm
        splits = split_examples(data.examples, 0, p["train_frac"], p["dev_frac"])
        test, train = splits["test"], splits["train"] + splits["dev"]
        log(f"router: {len(data.examples)} labeled items ({len(train)} train+dev, {len(test)} test); "
            f"agents by cost {swarm.names}")
        (self.out / "router").mkdir(exist_ok=True)
        (self.out / "router" / "labels.jsonl").write_text("".join(
            json.dumps({"key": ex.key, "dataset": ex.dataset, "label": ex.agent, "p_success": ex.p_success,
                        "cost": ex.cost}) + "\n" for ex in data.examples))
        decisions: dict[str, list[list[str]]] = {}
        kinds: dict[str, str] = {}
        latency: dict[str, list[float]] = {}
        fails: dict[str, int] = {}

        def run(name: str, router, kind: str = "baseline") -> None:
            decisions[name] = [[router.route(ex.task).agent for ex in test]]
            kinds[name] = kind

        for a in swarm.names:
            run(f"always:{a}", ConstantRouter(a, a), "reference")
        run("oracle", OracleRouter(test), "reference")
        run("random", RandomRouter(swarm.names, seed=0))
        run("tfidf-logreg", TfidfRouter.fit(train, swarm.cheapest))
        cost = {a: swarm.cost(a) for a in swarm.names}
        taus = [self.args.tau, 0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9, 1.0]
        knn = KnnTauRouter(train, swarm.names, cost, KnnTauRouter.tfidf(train), tau=self.args.tau)
        est = [knn.estimate(ex.task) for ex in test]
        decisions["tfidf-knn"] = [[knn.choose(e, t) for e in est] for t in taus]
        with start_router_server(Path(self.router_models["smollm2"]), n_ctx=2048, parallel=4,
                                 embeddings=True) as emb_server:
            embed = llama_embedder(emb_server.url)
            eknn = KnnTauRouter(train, swarm.names, cost, embed, tau=self.args.tau, name="embed-knn")
            est = [eknn.estimate(ex.task) for ex in test]
            t0 = time.perf_counter()
            for ex in test[: p["latency_items"]]:
                eknn.route(ex.task)
            latency["embed-knn"] = [(time.perf_counter() - t0) * 1000 / max(1, min(len(test), p["latency_items"]))]
        decisions["embed-knn"] = [[eknn.choose(e, t) for e in est] for t in taus]

        programs = []
        for lm_name, optimizer, structure, choice in p["compiles"]:
            if lm_name not in self.router_models:
                continue
            name = f"{optimizer}-{structure}-{choice}@{lm_name}"
            cfg = RouterConfig(**base, optimizer=optimizer, structure=structure, choice=choice,
                               router_model=self.router_models[lm_name], out=str(self.out / "router" / name),
                               mipro_auto="light", gepa_max_metric_calls=120 if self.preset == "h200" else 20)
            res = self.stage(f"router-compile {name}", compile_router, cfg, log=lambda m: log(f"router: {m}"))
            if res is not None:
                programs.append((name, str(res.out), lm_name))
        for name, path, _lm in programs:
            def score(name=name, path=path):
                with load_router(path) as router:
                    chosen, lat, failed = [], [], 0
                    for ex in test:
                        d = router.route(ex.task)
                        chosen.append(d.agent)
                        lat.append(d.latency_ms)
                        failed += d.parse_failed
                decisions[name], kinds[name], latency[name], fails[name] = [chosen], "program", lat, failed
            self.stage(f"router-eval {name}", score)
        meta = json.loads((self.out / "meta.json").read_text())
        meta.update({"cost_unit": swarm.cost_unit, "tau": self.args.tau, "n_labeled": len(data.examples),
                     "n_train_dev": len(train), "split_seed": 0, "cheapest": swarm.cheapest,
                     "strongest": swarm.strongest, "label_method": f"{p['repeats']} answers per item, seeded "
                     f"sampling at T={p['temperature']} (MMLU: next-token log-probability, deterministic)",
                     "taus_for_knn_curves": taus})
        strongest = max(swarm.names, key=lambda a: (sum(ex.p(a) for ex in test), -swarm.cost(a)))
        results = evaluate_decisions(test, swarm.names, swarm.cheapest, strongest, decisions, kinds=kinds,
                                     latency=latency, parse_failures=fails)
        meta["strongest_on_test"] = strongest
        meta["latency_note"] = "decision latency measured while the other stages shared the GPU"
        self.router_state = dict(test=test, agents=swarm.names, cheapest=swarm.cheapest, strongest=strongest,
                                 decisions=decisions, kinds=kinds, latency=latency, fails=fails, programs=programs,
                                 meta={k: v for k, v in meta.items() if k != "preset_values"})
        return write_report(results, self.router_state["meta"], self.out / "router")

    # --- 6. decision latency on a quiet GPU -----------------------------------------------------------------
    def latency(self) -> dict:
        """Each program's decision latency again, one request at a time, after every other stage has finished."""
        from router.frontier import evaluate_decisions, write_report
        from router.program import load_router

        st = self.router_state
        items = st["test"][: self.p["latency_items"]]
        for name, path, _lm in st["programs"]:
            with load_router(path) as router:
                router.route(items[0].task)  # warm-up
                st["latency"][name] = [router.route(ex.task).latency_ms for ex in items]
        st["meta"]["latency_note"] = (f"decision latency: {len(items)} held-out items one at a time, router LM fully "
                                      "offloaded (-ngl -1) where a GPU exists, measured after all other stages "
                                      "finished")
        results = evaluate_decisions(st["test"], st["agents"], st["cheapest"], st["strongest"], st["decisions"],
                                     kinds=st["kinds"], latency=st["latency"], parse_failures=st["fails"])
        return write_report(results, st["meta"], self.out / "router")["decision_p95_ms"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--out", default="runs/campaign")
    ap.add_argument("--data-dir", default=os.environ.get("QUANTSWARM_DATA", ""))
    ap.add_argument("--smollm2", default="smollm2-135m-instruct-q4_1")
    ap.add_argument("--qwen05", default="qwen2.5-coder-0.5b-instruct-q4_k_m")
    ap.add_argument("--qwen15", default="qwen2.5-coder-1.5b-instruct-q4_k_m")
    ap.add_argument("--repair-quant", default="Q3_K_M")
    ap.add_argument("--tau", type=float, default=0.5)
    ap.add_argument("--stages", default="swarm,energy,labels,repair,router")
    args = ap.parse_args()
    if args.data_dir and not Path(args.data_dir).is_dir():
        print(f"error: --data-dir {args.data_dir}: no such folder", file=sys.stderr)
        return 2
    camp = Campaign(args.preset, Path(args.out), args)
    stages = set(args.stages.split(","))
    if camp.stage("swarm", camp.swarm) is None:
        return 1
    camp.stage("meta", camp.meta)
    if "energy" in stages:
        camp.stage("energy", camp.energy)
    with ThreadPoolExecutor(2) as pool:
        repair = pool.submit(camp.stage, "repair", camp.repair) if "repair" in stages else None
        if "labels" in stages:
            camp.stage("labels", camp.labels)
        if "router" in stages:
            camp.stage("router", camp.router)
        if repair is not None:
            repair.result()
    if "router" in stages and getattr(camp, "router_state", None):
        camp.stage("latency", camp.latency)
    log(f"status: {json.dumps(camp.status)}")
    return 0 if all(s["ok"] for s in camp.status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
