"""Cost-quality frontier of routers on held-out items: accuracy, energy, APGR and CPT with bootstrap CIs.

Following RouteLLM (Ong et al., 2024, "RouteLLM: Learning to Route LLMs with Preference Data"), quality is the
performance gap recovered, ``PGR = (acc - acc_cheapest) / (acc_strongest - acc_cheapest)``, and cost is normalised so
always-cheapest is 0 and always-strongest is 1 (RouteLLM counts calls to the strong model; with more than two agents
of measured cost, the normalised mean cost per item plays that role). A router's curve joins (0, 0), its operating
points (one per threshold it was run at, running maximum of PGR, since mixing with the cheap and strong agents is
always possible) and (1, 1). **APGR** is the area under that curve (0.5 = random mixing of cheapest and strongest);
**CPT(x%)** is the smallest normalised cost at which the curve reaches a PGR of x%.

Accuracy of a routing is the mean over items of the chosen agent's success probability there (k answers per item
give an estimate; one answer gives 0/1), cost the mean of the chosen agent's cost there.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from router.labels import RoutingExample


@dataclass
class RouterResult:
    """One router's figures on the held-out items, each with a bootstrap 95% CI."""

    name: str
    kind: str  # program | baseline | reference
    n: int
    accuracy: float
    accuracy_ci: tuple[float, float]
    cost: float  # mean per item
    cost_ci: tuple[float, float]
    acc_ratio_vs_strongest: float
    cost_ratio_vs_strongest: float
    apgr: float
    apgr_ci: tuple[float, float]
    cpt: dict[str, float]  # "50" / "80" / "95" -> normalised cost (nan: never reached)
    label_accuracy: float
    share: dict[str, float]  # agent -> share of items sent there
    decision_p50_ms: float = float("nan")
    decision_p95_ms: float = float("nan")
    parse_failures: int = 0
    points: list[tuple[float, float]] = field(default_factory=list)  # (normalised cost, PGR) operating points


def _matrices(test: list[RoutingExample], agents: list[str]) -> tuple[np.ndarray, np.ndarray]:
    p = np.array([[ex.p(a) for a in agents] for ex in test])
    c = np.array([[ex.cost[a] for a in agents] for ex in test])
    return p, c


def curve_area(points: list[tuple[float, float]]) -> float:
    """Area under (0,0) -> points (sorted by cost, running max of PGR, clipped to [0,1]) -> (1,1)."""
    xs, ys = curve_points(points)
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2))


def curve_points(points: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """A router's cost-quality curve: (0,0), its operating points (cost clipped to [0, 1], running maximum of PGR
    capped at 1), (1,1)."""
    pts = sorted((min(max(x, 0.0), 1.0), y) for x, y in points if np.isfinite(x) and np.isfinite(y))
    xs, ys, best = [0.0], [0.0], 0.0
    for x, y in pts:
        best = max(best, min(y, 1.0))
        xs.append(x)
        ys.append(best)
    xs.append(1.0)
    ys.append(max(best, 1.0))
    return np.array(xs), np.array(ys)


def cpt(points: list[tuple[float, float]], target: float) -> float:
    """Smallest normalised cost at which the router's curve reaches PGR ``target`` (linear between points)."""
    xs, ys = curve_points(points)
    for i in range(1, len(xs)):
        if ys[i] >= target:
            if ys[i] == ys[i - 1]:
                return float(xs[i - 1]) if ys[i - 1] >= target else float(xs[i])
            return float(xs[i - 1] + (target - ys[i - 1]) / (ys[i] - ys[i - 1]) * (xs[i] - xs[i - 1]))
    return float("nan")


def evaluate_decisions(test: list[RoutingExample], agents: list[str], cheapest: str, strongest: str,
                       decisions: dict[str, list[list[str]]], *, kinds: dict[str, str] | None = None,
                       latency: dict[str, list[float]] | None = None, parse_failures: dict[str, int] | None = None,
                       n_boot: int = 1000, seed: int = 0) -> list[RouterResult]:
    """Score routers given their choices: ``decisions[name]`` is one list of agents per operating point (a
    threshold router has several), each as long as ``test``. The first operating point is the router's own."""
    p, c = _matrices(test, agents)
    idx = {a: i for i, a in enumerate(agents)}
    ic, is_ = idx[cheapest], idx[strongest]
    n = len(test)
    rng = np.random.default_rng(seed)
    boots = rng.integers(0, n, size=(n_boot, n))
    labels = [ex.agent for ex in test]

    def figures(rows: np.ndarray, chosen: np.ndarray):
        pick = chosen[rows]  # the router's decision for each resampled item
        acc = p[rows, pick].mean()
        cost = c[rows, pick].mean()
        a0, a1 = p[rows, ic].mean(), p[rows, is_].mean()
        c0, c1 = c[rows, ic].mean(), c[rows, is_].mean()
        x = (cost - c0) / (c1 - c0) if c1 != c0 else np.nan
        y = (acc - a0) / (a1 - a0) if a1 != a0 else np.nan
        return acc, cost, x, y, a1, c1

    out = []
    all_rows = np.arange(n)
    for name, points in decisions.items():
        chosen_sets = [np.array([idx[a] for a in d]) for d in points]
        acc, cost, _, _, a1, c1 = figures(all_rows, chosen_sets[0])
        pts = [figures(all_rows, ch)[2:4] for ch in chosen_sets]
        b_acc, b_cost, b_apgr = [], [], []
        for rows in boots:
            f = [figures(rows, ch) for ch in chosen_sets]
            b_acc.append(f[0][0])
            b_cost.append(f[0][1])
            b_apgr.append(curve_area([(x, y) for _, _, x, y, _, _ in f]))
        lat = np.array((latency or {}).get(name) or [np.nan])
        share = {a: float(np.mean(chosen_sets[0] == idx[a])) for a in agents}
        out.append(RouterResult(
            name=name, kind=(kinds or {}).get(name, "baseline"), n=n, accuracy=float(acc),
            accuracy_ci=_ci(b_acc), cost=float(cost), cost_ci=_ci(b_cost),
            acc_ratio_vs_strongest=float(acc / a1) if a1 else float("nan"),
            cost_ratio_vs_strongest=float(cost / c1) if c1 else float("nan"),
            apgr=curve_area(pts), apgr_ci=_ci(b_apgr), cpt={str(t): cpt(pts, t / 100) for t in (50, 80, 95)},
            label_accuracy=float(np.mean([agents[i] == lab for i, lab in zip(chosen_sets[0], labels, strict=True)])),
            share=share, decision_p50_ms=float(np.nanpercentile(lat, 50)) if np.isfinite(lat).any() else float("nan"),
            decision_p95_ms=float(np.nanpercentile(lat, 95)) if np.isfinite(lat).any() else float("nan"),
            parse_failures=int((parse_failures or {}).get(name, 0)), points=[(float(x), float(y)) for x, y in pts]))
    return out


def _ci(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return (float("nan"), float("nan"))
    return (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5)))


def best_program(results: list[RouterResult], min_acc_ratio: float = 0.95) -> RouterResult | None:
    """The program with the lowest cost among those reaching ``min_acc_ratio`` of always-strongest's accuracy,
    else the program with the highest APGR."""
    progs = [r for r in results if r.kind == "program"]
    if not progs:
        return None
    good = [r for r in progs if r.acc_ratio_vs_strongest >= min_acc_ratio]
    return min(good, key=lambda r: r.cost) if good else max(progs, key=lambda r: r.apgr)


def write_report(results: list[RouterResult], meta: dict, out: str | Path) -> dict:
    """``report.md``, ``frontier.png`` and ``summary.json`` (keys documented in the README) into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    best = best_program(results)
    by = {r.name: r for r in results}
    summary = {
        "best_router": best.name if best else None,
        "acc_ratio_vs_strongest": best.acc_ratio_vs_strongest if best else None,
        "energy_ratio_vs_strongest": best.cost_ratio_vs_strongest if best else None,
        "apgr": {r.name: r.apgr for r in results},
        "apgr_ci": {r.name: r.apgr_ci for r in results},
        "decision_p95_ms": {r.name: r.decision_p95_ms for r in results if np.isfinite(r.decision_p95_ms)},
        "n_test": results[0].n if results else 0,
        **{k: meta.get(k) for k in ("gpu", "date")},
        "meta": meta,
        "results": [asdict(r) for r in results],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    (out / "report.md").write_text(_markdown(results, meta, best, by))
    _plot(results, out / "frontier.png", meta)
    return summary


def _fmt_ci(v: float, ci: tuple[float, float], pct: bool = True) -> str:
    if pct:
        return f"{v:.1%} [{ci[0]:.1%}, {ci[1]:.1%}]"
    return f"{v:.3g} [{ci[0]:.3g}, {ci[1]:.3g}]"


def _markdown(results: list[RouterResult], meta: dict, best: RouterResult | None, by: dict) -> str:
    lines = ["# Router evaluation: cost-quality frontier", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items() if not isinstance(v, dict | list)]
    lines += ["", "Accuracy = mean success probability of the chosen agent per held-out item; cost = mean "
              f"{meta.get('cost_unit', 'cost')} per item; 95% bootstrap CIs over items. APGR/CPT as RouteLLM defines "
              "them (normalised cost: 0 = always-cheapest, 1 = always-strongest).", "",
              "| router | kind | accuracy | vs strongest | cost/item | vs strongest | APGR | CPT50 | CPT80 | CPT95 "
              "| label acc | decision p50/p95 ms |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (r.kind != "reference", r.kind, -r.apgr)):
        lat = (f"{r.decision_p50_ms:.1f} / {r.decision_p95_ms:.1f}" if np.isfinite(r.decision_p95_ms) else "—")
        lines.append(
            f"| {r.name} | {r.kind} | {_fmt_ci(r.accuracy, r.accuracy_ci)} | {r.acc_ratio_vs_strongest:.1%} | "
            f"{_fmt_ci(r.cost, r.cost_ci, False)} | {r.cost_ratio_vs_strongest:.1%} | "
            f"{r.apgr:.3f} [{r.apgr_ci[0]:.3f}, {r.apgr_ci[1]:.3f}] | "
            + " | ".join("—" if not np.isfinite(r.cpt[t]) else f"{r.cpt[t]:.2f}" for t in ("50", "80", "95"))
            + f" | {r.label_accuracy:.1%} | {lat} |")
    lines += ["", "## Where each router sends the items (share per agent)", "",
              "| router | " + " | ".join(results[0].share) + " |", "|---|" + "---|" * len(results[0].share)]
    for r in results:
        lines.append(f"| {r.name} | " + " | ".join(f"{v:.0%}" for v in r.share.values()) + " |")
    lines += ["", "## Verdict", ""]
    if best is None:
        lines.append("No DSPy program was evaluated.")
    else:
        ok = best.acc_ratio_vs_strongest >= 0.95 and best.cost_ratio_vs_strongest <= 0.5
        lines.append(f"Best compiled DSPy router: **{best.name}** — {best.acc_ratio_vs_strongest:.1%} of "
                     f"always-strongest's accuracy at {best.cost_ratio_vs_strongest:.1%} of its cost per item; "
                     f"target (>= 95% at <= 50%) {'met' if ok else 'NOT met'}.")
        for other in ("tfidf-knn", "embed-knn", "tfidf-logreg"):
            if other in by:
                o = by[other]
                lines.append(f"- APGR {best.name} {best.apgr:.3f} [{best.apgr_ci[0]:.3f}, {best.apgr_ci[1]:.3f}] vs "
                             f"{other} {o.apgr:.3f} [{o.apgr_ci[0]:.3f}, {o.apgr_ci[1]:.3f}]")
    return "\n".join(lines) + "\n"


def _plot(results: list[RouterResult], path: Path, meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 6))
    for r in results:
        marker = {"reference": "s", "baseline": "o", "program": "*"}.get(r.kind, "o")
        ax1.errorbar(r.cost, r.accuracy, yerr=[[max(0.0, r.accuracy - r.accuracy_ci[0])],
                                               [max(0.0, r.accuracy_ci[1] - r.accuracy)]],
                     fmt=marker, ms=10 if marker == "*" else 6, capsize=2)
        ax1.annotate(r.name, (r.cost, r.accuracy), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if r.kind != "reference":
            xs, ys = curve_points(r.points)
            ax2.plot(xs, ys, label=f"{r.name} ({r.apgr:.2f})", lw=2 if r.kind == "program" else 1)
    ax2.plot([0, 1], [0, 1], "k--", lw=1, label="random mixing (0.50)")
    ax1.set_xlabel(f"cost per item ({meta.get('cost_unit', '')})")
    ax1.set_ylabel("accuracy (mean success probability)")
    ax1.set_title("Routers on the held-out split (95% CI)")
    ax2.set_xlabel("normalised cost (0 = always-cheapest, 1 = always-strongest)")
    ax2.set_ylabel("performance gap recovered")
    ax2.set_title("Cost-quality curves (APGR in the legend)")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
