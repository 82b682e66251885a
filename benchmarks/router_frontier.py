"""Score a campaign's routers on its held-out split: baselines, kNN curves and the compiled DSPy programs.

    python benchmarks/router_frontier.py runs/h200 --out benchmarks/results/gpu/2026-11-30-h200-router \
        --strongest qwen15-f16 --program-items 100

Reads the campaign's results table (labels: success probability per agent and item, tau), its energy model
(``energy_costs.json``) and its compiled programs (``router/*/``), and writes ``report.md``, ``frontier.png`` and
``summary.json`` (router/frontier.py) twice: for every LM-free router on the whole held-out split, and for every
router, the DSPy programs included, on a stratified sample of ``--program-items`` held-out items (the router LM
runs wherever this script runs; the report says where, and decision latency is that machine's).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def stratified(examples, n: int, seed: int = 0):
    """``n`` examples, the same number from each family (dataset), seeded; all of them when ``n`` <= 0."""
    if n <= 0:
        return sorted(examples, key=lambda e: e.key)
    by: dict[str, list] = {}
    for ex in sorted(examples, key=lambda e: e.key):
        by.setdefault(ex.dataset, []).append(ex)
    rng = random.Random(seed)
    per = max(1, n // len(by))
    out = []
    for fam in sorted(by):
        out += rng.sample(by[fam], min(per, len(by[fam])))
    return out


def main() -> int:
    from quantswarm.energy import device_label
    from router.baselines import KnnTauRouter, OracleRouter, RandomRouter, TfidfRouter, llama_embedder
    from router.frontier import evaluate_decisions, write_report
    from router.labels import labels_from_results, split_examples
    from router.program import load_router
    from router.router_lm import start_router_server

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("campaign", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--strongest", default="", help="always-strongest reference (default: the most accurate agent)")
    ap.add_argument("--tau", type=float, default=0.5)
    ap.add_argument("--train-frac", type=float, default=0.27)
    ap.add_argument("--dev-frac", type=float, default=0.07)
    ap.add_argument("--program-items", type=int, default=100,
                    help="held-out items the DSPy programs route, stratified by family (0: the whole split)")
    ap.add_argument("--programs", default="", help="comma-separated program folder names (default: all)")
    ap.add_argument("--router-model", default="smollm2-135m-instruct-q4_1", help="embedding model for embed-knn")
    args = ap.parse_args()
    camp = args.campaign
    data = labels_from_results(camp / "results", tau=args.tau, cost_file=str(camp / "energy_costs.json"))
    sw = data.swarm
    sp = split_examples(data.examples, 0, args.train_frac, args.dev_frac)
    test, train = sp["test"], sp["train"] + sp["dev"]
    import numpy as np

    strongest = args.strongest or max(sw.names, key=lambda a: (np.mean([ex.p(a) for ex in test]), -sw.cost(a)))
    cost = {a: sw.cost(a) for a in sw.names}
    taus = [args.tau, 0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9, 1.0]
    sample = stratified(test, args.program_items)
    meta = json.loads((camp / "meta.json").read_text())
    meta.pop("preset_values", None)
    meta.update({"labels_from": f"{camp}/results (measured on {meta.get('gpu')})", "cost_unit": sw.cost_unit,
                 "tau": args.tau, "n_labeled": len(data.examples), "n_train_dev": len(train),
                 "cheapest": sw.cheapest, "strongest": strongest, "scored_on": device_label(),
                 "date_scored": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})

    def lm_free(items):
        d, kinds = {}, {}
        for a in sw.names:
            d[f"always:{a}"], kinds[f"always:{a}"] = [[a] * len(items)], "reference"
        d["oracle"], kinds["oracle"] = [[OracleRouter(items).route(ex.task).agent for ex in items]], "reference"
        rnd = RandomRouter(sw.names, seed=0)
        d["random"] = [[rnd.route(ex.task).agent for ex in items]]
        tf = TfidfRouter.fit(train, sw.cheapest)
        d["tfidf-logreg"] = [[tf.route(ex.task).agent for ex in items]]
        knn = KnnTauRouter(train, sw.names, cost, KnnTauRouter.tfidf(train), tau=args.tau)
        est = [knn.estimate(ex.task) for ex in items]
        d["tfidf-knn"] = [[knn.choose(e, t) for e in est] for t in taus]
        return d, kinds

    full, kinds = lm_free(test)
    t0 = time.perf_counter()
    with start_router_server(_model(args.router_model), n_ctx=2048, parallel=2,
                             embeddings=True) as srv:
        embed = cached(llama_embedder(srv.url), args.out / "embeddings-cache.npz")
        eknn = KnnTauRouter(train, sw.names, cost, embed, tau=args.tau, name="embed-knn")
        est = {ex.key: eknn.estimate(ex.task) for ex in test}
    print(f"embeddings: {time.perf_counter() - t0:.0f} s", flush=True)
    full["embed-knn"] = [[eknn.choose(est[ex.key], t) for ex in test] for t in taus]
    res = evaluate_decisions(test, sw.names, sw.cheapest, strongest, full, kinds=kinds)
    write_report(res, {**meta, "items": "the whole held-out split; LM-free routers only"}, args.out / "full-split")

    sub, sub_kinds = lm_free(sample)
    sub["embed-knn"] = [[eknn.choose(est[ex.key], t) for ex in sample] for t in taus]
    latency, fails = {}, {}
    wanted = set(filter(None, args.programs.split(",")))
    for manifest in sorted((camp / "router").glob("*/manifest.json")):
        name = manifest.parent.name
        if wanted and name not in wanted:
            continue
        t0 = time.perf_counter()
        with load_router(manifest.parent) as router:
            router.route(sample[0].task)  # warm-up
            got = [router.route(ex.task) for ex in sample]
        sub[name], sub_kinds[name] = [[d.agent for d in got]], "program"
        latency[name], fails[name] = [d.latency_ms for d in got], sum(d.parse_failed for d in got)
        print(f"{name}: {len(sample)} decisions in {time.perf_counter() - t0:.0f} s", flush=True)
    res = evaluate_decisions(sample, sw.names, sw.cheapest, strongest, sub, kinds=sub_kinds, latency=latency,
                             parse_failures=fails)
    which = (f"all {len(sample)} held-out items" if len(sample) == len(test)
             else f"stratified sample of {len(sample)} of the {len(test)} held-out items")
    summary = write_report(res, {**meta, "items": which,
                                 "latency_note": f"decision latency on {device_label()}, one request at a time"},
                           args.out / "programs")
    print(json.dumps({k: summary[k] for k in ("best_router", "acc_ratio_vs_strongest",
                                              "energy_ratio_vs_strongest")}, default=float))
    return 0


def cached(embed, path: Path):
    """``embed`` with a disk cache keyed by the text's sha256 (a rerun of the script embeds nothing again)."""
    import hashlib

    import numpy as np

    store = dict(np.load(path)) if path.is_file() else {}

    def run(texts: list[str]):
        keys = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
        todo = [(k, t) for k, t in zip(keys, texts, strict=True) if k not in store]
        if todo:
            for k, v in zip([k for k, _ in todo], embed([t for _, t in todo]), strict=True):
                store[k] = v
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, **store)
        return np.vstack([store[k] for k in keys])

    return run


def _model(spec: str):
    from quantswarm.registry import resolve_model

    return resolve_model(spec)


if __name__ == "__main__":
    sys.exit(main())
