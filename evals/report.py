"""``quantswarm eval report``: accuracy with CIs, paired degradation vs the reference, speed, energy, KLD.

Everything is derived from the results table (per-item rows) plus the run's block records
(``blocks.jsonl``: wall time, peak VRAM, energy) and fidelity records (``kld.jsonl``). Writes
``summary.md``, ``accuracy.csv``, ``paired.csv`` and ``accuracy_vs_bpw.png`` into the output folder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from evals.kld import read_fidelity
from evals.stats import paired, wilson
from quantswarm.errors import ResultsSchemaError
from quantswarm.results import ResultsTable
from quantswarm.text_table import markdown_table


@dataclass
class Report:
    """The report's tables (also written to disk by :func:`write_report`)."""

    accuracy: pd.DataFrame
    paired: pd.DataFrame
    speed: pd.DataFrame
    reference: str
    markdown: str


def read_blocks(results: Path) -> pd.DataFrame:
    p = Path(results) / "blocks.jsonl"
    if not p.exists():
        return pd.DataFrame()
    return pd.DataFrame([json.loads(x) for x in p.read_text().splitlines() if x.strip()])


def pick_reference(frame: pd.DataFrame, reference: str | None) -> str:
    agents = sorted(frame.agent.unique())
    if reference:
        if reference not in agents:
            raise ResultsSchemaError(f"reference agent {reference!r} is not in the table; agents: {', '.join(agents)}")
        return reference
    refs = sorted({a for a, r in zip(frame.agent, frame.reference, strict=True)
                   if r.startswith(("F16 (", "F32 (", "BF16 ("))})
    return refs[0] if refs else agents[0]


TRUNCATION_FROM_FINISH = "share of answers that stopped at the max_tokens cap (finish_reason `length`)"
TRUNCATION_ESTIMATED = ("share of answers with completion_tokens >= the max_tokens used (no row records a "
                        "finish_reason, so this is estimated from token counts)")
TRUNCATION_MIXED = ("share of answers that stopped at the max_tokens cap (finish_reason `length`; for rows "
                    "without a finish_reason, estimated as completion_tokens >= the max_tokens used)")
NOT_GENERATED = ("error", "logprob")  # finish reasons of rows that have no generated answer to cut off


def max_tokens_used(frame: pd.DataFrame, blocks: pd.DataFrame | None = None) -> pd.Series:
    """The answer cap each row ran with: the row's own ``max_tokens`` when the table has that column (and it is
    set), else the block record's for its run, agent and task, else the task YAML's (right unless the run
    overrode it); NaN for log-probability tasks, which generate nothing."""
    from evals.task import load_task
    from quantswarm.errors import ConfigError

    caps: dict[str, float] = {}
    for name in frame.task.unique():
        try:
            task = load_task(name)
        except ConfigError:
            caps[name] = float("nan")
            continue
        caps[name] = float("nan") if task.method == "logprob" else float(task.generation.max_tokens)
    used = frame.task.map(caps).astype(float)
    if blocks is not None and not blocks.empty and "max_tokens" in blocks:
        known = blocks.dropna(subset=["max_tokens"]).drop_duplicates(["run_id", "agent", "task"], keep="last")
        keyed = frame[["run_id", "agent", "task"]].merge(known[["run_id", "agent", "task", "max_tokens"]],
                                                         how="left", on=["run_id", "agent", "task"])
        from_blocks = pd.Series(keyed.max_tokens.to_numpy(dtype=float), index=frame.index)
        used = from_blocks.where(from_blocks.notna() & used.notna(), used)
    if "max_tokens" in frame:
        own = pd.to_numeric(frame.max_tokens, errors="coerce").astype(float)
        used = own.where((own > 0) & used.notna(), used)
    return used


def truncated_flags(frame: pd.DataFrame, blocks: pd.DataFrame | None = None) -> tuple[pd.Series, str]:
    """Per row: 1.0 when the answer was cut off by the max_tokens cap, 0.0 when not, NaN where that does not
    apply (log-probability scoring, engine errors); and the sentence saying how it was decided: from
    ``finish_reason`` where the table has one, else from token counts against the cap."""
    used = max_tokens_used(frame, blocks)
    flags = (frame.completion_tokens >= used).astype(float)
    flags[used.isna() | frame.output.str.startswith("[error]")] = float("nan")
    if "finish_reason" not in frame:
        return flags, TRUNCATION_ESTIMATED
    reason = frame.finish_reason.fillna("").astype(str)
    known = reason != ""
    flags = flags.where(~known, (reason == "length").astype(float))
    flags[reason.isin(NOT_GENERATED)] = float("nan")
    if frame.empty or known.all():
        return flags, TRUNCATION_FROM_FINISH
    return flags, TRUNCATION_MIXED if known.any() else TRUNCATION_ESTIMATED


def accuracy_table(frame: pd.DataFrame, blocks: pd.DataFrame | None = None) -> pd.DataFrame:
    """Accuracy with a Wilson CI per agent, task and filter, with engine errors and the truncated share."""
    truncated, _ = truncated_flags(frame, blocks)
    frame = frame.assign(_truncated=truncated)
    rows = []
    for (agent, quant, ref, task, filt), g in frame.groupby(["agent", "quant", "reference", "task", "filter"]):
        ci = wilson(int(g.correct.sum()), len(g))
        rows.append({"agent": agent, "quant": quant, "made_as": ref or quant, "task": task, "filter": filt,
                     "primary": bool(g.primary.iloc[0]), "n": ci.n, "accuracy": ci.value, "ci_low": ci.low,
                     "ci_high": ci.high, "errors": int(g.output.str.startswith("[error]").sum()),
                     "truncated": float(g._truncated.mean()) if g._truncated.notna().any() else float("nan")})
    return pd.DataFrame(rows)


def paired_table(frame: pd.DataFrame, reference: str) -> pd.DataFrame:
    prim = frame[frame.primary]
    rows = []
    for task, tg in prim.groupby("task"):
        ref = tg[tg.agent == reference].drop_duplicates("item_id").set_index("item_id").correct
        if ref.empty:
            continue
        for agent, ag in tg.groupby("agent"):
            if agent == reference:
                continue
            other = ag.drop_duplicates("item_id").set_index("item_id").correct
            common = ref.index.intersection(other.index)
            d = paired(ref.loc[common].to_numpy(), other.loc[common].to_numpy())
            rows.append({"agent": agent, "task": task, "vs": reference, **asdict(d)})
    return pd.DataFrame(rows)


def speed_table(blocks: pd.DataFrame) -> pd.DataFrame:
    if blocks.empty:
        return blocks
    agg = blocks.groupby(["agent", "task"]).agg(
        items=("items", "sum"), wall_s=("wall_s", "sum"), completion_tokens=("completion_tokens", "sum"),
        joules=("joules", lambda s: s.sum(min_count=1)), peak_vram_mib=("peak_vram_mib", "max"),
        bits_per_weight=("bits_per_weight", "last"), backend=("backend", "last"), parallel=("parallel", "last"),
        device=("device", "last"), **({"tensor_types": ("tensor_types", "last"),
                                       "k_quant_fell_back": ("k_quant_fell_back", "last")}
                                      if "tensor_types" in blocks else {})).reset_index()
    agg["items_per_s"] = agg["items"] / agg["wall_s"]
    agg["gen_tok_per_s"] = agg["completion_tokens"] / agg["wall_s"]
    agg["wh_per_mtok"] = agg["joules"] / 3600 / agg["completion_tokens"].clip(lower=1) * 1e6
    return agg


def _fmt(x, digits=3) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "n/a"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _md(df: pd.DataFrame, cols: list[str]) -> str:
    return markdown_table([{c: _fmt(r[c]) for c in cols} for _, r in df.iterrows()], cols, empty="(none)")


def build_report(results: str | Path, reference: str | None = None) -> Report:
    results = Path(results)
    frame = ResultsTable(results).read(source="eval")
    if frame.empty:
        raise ResultsSchemaError(f"{results}: no eval rows; run `quantswarm eval run` first")
    ref = pick_reference(frame, reference)
    blocks = read_blocks(results)
    acc = accuracy_table(frame, blocks)
    _, truncation = truncated_flags(frame, blocks)
    pair = paired_table(frame, ref)
    speed = speed_table(blocks)
    fid = read_fidelity(results)
    meta = frame.iloc[0]
    md = [f"# Quantization eval report\n\nResults: `{results}` · device: {meta.device} · backend: {meta.backend} · "
          f"rows: {len(frame)} · reference: **{ref}** ({frame[frame.agent == ref].reference.iloc[0] or 'as given'})\n",
          "## Accuracy (95% Wilson CI; `errors`: items the engine refused, e.g. over n_ctx, scored wrong; "
          f"`truncated`: {truncation}; n/a for log-probability tasks)\n",
          _md(acc, ["agent", "made_as", "task", "filter", "n", "accuracy", "ci_low", "ci_high", "errors",
                    "truncated"]),
          f"\n## Paired difference vs {ref} (primary filter; bootstrap 95% CI; McNemar exact p; flips)\n",
          _md(pair, ["agent", "task", "n", "acc_a", "acc_b", "diff", "low", "high", "p_mcnemar", "right_to_wrong",
                     "wrong_to_right"])]
    if fid:
        fdf = pd.DataFrame([asdict(f) for f in fid.values()])
        md += [f"\n## Token-level fidelity vs {next(iter(fid.values())).reference_agent} (llama-perplexity)\n",
               _md(fdf, ["agent", "mean_kld", "kld_err", "same_top1_pct", "ppl", "tokens", "text"])]
    if not speed.empty and "tensor_types" in speed:
        rungs = speed.drop_duplicates("agent")
        md += ["\n## Stored tensor types (from each GGUF)\n", _md(rungs, ["agent", "bits_per_weight", "tensor_types"])]
        fell = rungs[rungs.k_quant_fell_back.fillna(False).astype(bool)]
        if not fell.empty:
            md.append(f"\n**Nominal k-quants that fell back** (most tensors stored in other types, because their rows "
                      f"do not divide into 256-element super-blocks): {', '.join(fell.agent)}. Their names overstate "
                      "how low-bit they are; read them by bits per weight.\n")
    if not speed.empty:
        md += ["\n## Speed and energy (per agent × task block)\n",
               _md(speed, ["agent", "task", "items", "wall_s", "items_per_s", "gen_tok_per_s", "bits_per_weight",
                           "peak_vram_mib", "joules", "wh_per_mtok", "backend", "parallel"])]
    return Report(acc, pair, speed, ref, "\n".join(md))


def run_summary(results: str | Path, agents: list[str] | None = None, tasks: list[str] | None = None) -> str:
    """A plain-text accuracy table (per agent, task and filter, with the truncated share) of the eval rows of
    ``agents`` on ``tasks`` (all when None): what `eval run` prints when it ends."""
    from quantswarm.text_table import format_table

    results = Path(results)
    frame = ResultsTable(results).read(source="eval")
    if not frame.empty and agents is not None:
        frame = frame[frame.agent.isin(agents)]
    if not frame.empty and tasks is not None:
        frame = frame[frame.task.isin(tasks)]
    if frame.empty:
        return f"no eval rows in {results} for these models and tasks"
    blocks = read_blocks(results)
    acc = accuracy_table(frame, blocks)
    _, truncation = truncated_flags(frame, blocks)
    rows = [{"agent": r.agent, "task": r.task, "filter": r["filter"] + ("*" if r.primary else ""), "n": r.n,
             "accuracy": f"{r.accuracy:.3f}", "95% CI": f"[{r.ci_low:.3f}, {r.ci_high:.3f}]", "errors": r.errors,
             "truncated": _fmt(r.truncated)} for _, r in acc.sort_values(["task", "agent", "filter"]).iterrows()]
    return format_table(rows) + f"\n* primary filter; truncated: {truncation}"


def plot(report: Report, fidelity: dict, out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if report.speed.empty:
        return None
    bpw = report.speed.groupby("agent").bits_per_weight.last()
    prim = report.accuracy[report.accuracy.primary].copy()
    prim["bpw"] = prim.agent.map(bpw)
    prim = prim.dropna(subset=["bpw"])
    fig, axes = plt.subplots(1, 2 if fidelity else 1, figsize=(12 if fidelity else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    for task, g in prim.groupby("task"):
        g = g.sort_values("bpw")
        ax.errorbar(g.bpw, g.accuracy, yerr=[g.accuracy - g.ci_low, g.ci_high - g.accuracy], marker="o", capsize=3,
                    label=task)
        for _, r in g.iterrows():
            ax.annotate(r.quant, (r.bpw, r.accuracy), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("bits per weight")
    ax.set_ylabel("accuracy (primary filter, 95% CI)")
    ax.set_title("Accuracy vs bits per weight")
    ax.legend(fontsize=8)
    if fidelity:
        ax2 = axes[0][1]
        pts = [(bpw.get(a), f.mean_kld, a) for a, f in fidelity.items() if a in bpw]
        if pts:
            ax2.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color="tab:red")
            for x, y, a in pts:
                ax2.annotate(a.split("@")[-1], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax2.set_xlabel("bits per weight")
        ax2.set_ylabel("mean KL divergence vs reference")
        ax2.set_yscale("log")
        ax2.set_title("Next-token KLD vs bits per weight")
    fig.tight_layout()
    path = out / "accuracy_vs_bpw.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(results: str | Path, out: str | Path | None = None, reference: str | None = None) -> Report:
    rep = build_report(results, reference)
    out = Path(out or Path(results) / "report")
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(rep.markdown)
    rep.accuracy.to_csv(out / "accuracy.csv", index=False)
    rep.paired.to_csv(out / "paired.csv", index=False)
    if not rep.speed.empty:
        rep.speed.to_csv(out / "speed.csv", index=False)
    plot(rep, read_fidelity(Path(results)), out)
    return rep
