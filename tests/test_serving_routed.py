"""The routed workload: the compiled router's held-out tasks, served model=auto through the bus, scored by their eval
task; several loads in one swarm load; the serving campaign's each-agent-alone baseline (real llama-server, real
nats-server, a TF-IDF router program so no router LM runs on the 2 CPU cores)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from quantswarm.errors import ConfigError, DataError
from quantswarm.loaders import load
from quantswarm.results import ResultsTable
from router.labels import RoutingExample, split_of
from serving.bench import BenchConfig, BenchSession, WorkItem, score
from serving.routed_workload import heldout_keys, routed_workload
from serving.swarm_config import load_swarm
from serving.workers import free_port_block

REPO = Path(__file__).resolve().parent.parent
SPLIT = {"split_seed": 0, "train_frac": 0.3, "dev_frac": 0.1}


def make_router(tmp_path: Path, agents: tuple[str, ...] = ("chat", "coder")) -> tuple[Path, Path]:
    """A TF-IDF router program (manifest with its split) and its labels JSONL over easy + MMLU test items."""
    from router import TfidfRouter

    items = load("easy", "test")[:40] + load("mmlu", "test")[:20]
    labels = tmp_path / "labels.jsonl"
    examples = []
    with labels.open("w") as f:
        for i, it in enumerate(items):
            key = f"{it.dataset}/{it.split}/{it.item_id}"
            agent = agents[i % len(agents)]
            f.write(json.dumps({"key": key, "label": agent}) + "\n")
            examples.append(RoutingExample(key, it.question, agent, {a: a == agent for a in agents},
                                           {a: 1.0 for a in agents}))
    prog = tmp_path / "router"
    prog.mkdir()
    TfidfRouter.fit(examples, agents[0]).save(prog / "tfidf.json")
    (prog / "manifest.json").write_text(json.dumps({"agents": list(agents), "data": SPLIT}))
    return prog, labels


def test_heldout_keys_are_the_test_split(tmp_path):
    prog, labels = make_router(tmp_path)
    keys = heldout_keys(labels, prog)
    every = [json.loads(line)["key"] for line in labels.read_text().splitlines()]
    assert keys == [k for k in every if split_of(k, 0, 0.3, 0.1) == "test"]
    assert 0 < len(keys) < len(every)


@pytest.mark.parametrize("bad, kind, error", [
    ("manifest", ConfigError, "data block lacks split_seed"),
    ("bool-seed", ConfigError, "data block lacks split_seed"),
    ("manifest-list", ConfigError, "no `data` object"), ("data-null", ConfigError, "no `data` object"),
    ("line", DataError, "labels.jsonl:2: not a JSON object"), ("key", DataError, "is not dataset/split/item_id"),
    ("twice", DataError, "labels.jsonl:3: key .* again \\(first on line 1\\)"),
    ("binary", DataError, "cannot read the labels"), ("missing", DataError, "no such labels file")])
def test_heldout_keys_reject_bad_inputs_in_one_line(tmp_path, bad, kind, error):
    prog, labels = make_router(tmp_path)
    lines = labels.read_text().splitlines()
    manifest = {"manifest": {"data": {"train_frac": 0.3}}, "bool-seed": {"data": {**SPLIT, "split_seed": True}},
                "manifest-list": [SPLIT], "data-null": {"data": None}}
    if bad in manifest:
        (prog / "manifest.json").write_text(json.dumps(manifest[bad]))
    elif bad == "line":
        labels.write_text("\n".join([lines[0], "[1, 2]", *lines[2:]]))
    elif bad == "key":
        labels.write_text(json.dumps({"key": "easy-1"}) + "\n")
    elif bad == "twice":
        labels.write_text("\n".join([lines[0], lines[1], lines[0]]))
    elif bad == "binary":
        labels.write_bytes(b"\xff\xfe\x00garbage")
    else:
        labels.unlink()
    with pytest.raises(kind, match=error) as exc:
        heldout_keys(labels, prog)
    assert "\n" not in str(exc.value)


def test_a_request_id_used_twice_is_refused_before_anything_is_sent():
    import asyncio

    from serving.bench import run_bus

    twice = [WorkItem("same", "easy", [{"role": "user", "content": "hi"}])] * 2
    with pytest.raises(ConfigError, match="request id 'same' is used twice"):
        asyncio.run(run_bus(None, "nats://127.0.0.1:1", twice, BenchConfig(), "run", lambda _s: None))


def test_routed_workload_scores_like_the_eval_and_drops_code_without_opt_in(tmp_path, capsys):
    prog, labels = make_router(tmp_path)
    keys = [f"humaneval/test/{it.item_id}" for it in load("humaneval", "test")]
    held = [k for k in keys if split_of(k, 0, 0.3, 0.1) == "test"][:2]
    assert held, "the shipped HumanEval items have keys in the test split"
    with labels.open("a") as f:
        f.writelines(json.dumps({"key": k}) + "\n" for k in held)
    items = routed_workload(labels, prog, 30, seed=1)
    assert "HumanEval items dropped" in capsys.readouterr().err
    assert {it.kind for it in items} <= {"easy", "mmlu"} and len({it.id for it in items}) == 30
    mmlu = next(it for it in items if it.kind == "mmlu")
    assert mmlu.task == "mmlu_generate" and mmlu.messages[-1]["content"].endswith("Answer:")
    assert len(mmlu.messages) == 1 + 2 * 5 + 1  # system, 5 exemplars (user + assistant), the question
    wrong = next(c for c in "ABCD" if c != mmlu.gold)
    assert score(mmlu, f" {mmlu.gold}", "general") == (True, mmlu.gold)
    assert score(mmlu, wrong, "general") == (False, wrong)
    easy = next(it for it in items if it.kind == "easy")
    assert score(easy, f"The answer is {easy.gold}.", "general")[0] is True
    # more tasks than held-out items: every item served, cycled with distinct ids (bus message ids must differ)
    servable = [k for k in heldout_keys(labels, prog) if not k.startswith("humaneval/")]
    many = routed_workload(labels, prog, len(servable) + 3, seed=1)
    assert len({it.id for it in many}) == len(servable) + 3
    assert {f"{it.kind}/test/{it.item.item_id}" for it in many} == set(servable)


def test_code_items_run_their_tests_when_allowed():
    he = load("humaneval", "test")[0]
    it = WorkItem("he", "humaneval", [], gold=he.gold, task="humaneval_pass1", item=he, allow_code_execution=True)
    assert score(it, f"```python\n{he.question}{he.gold}\n```", "coder")[0] is True
    assert score(it, "```python\ndef nothing():\n    pass\n```", "coder")[0] is False


def write_spec(tmp_path: Path, smollm2: Path, prog: Path) -> Path:
    base = free_port_block(4)
    spec = tmp_path / "routed.yaml"
    spec.write_text(yaml.safe_dump({
        "agents": {"chat": {"model": str(smollm2), "n_ctx": 1024, "parallel": 2, "n_threads": 1},
                   "coder": {"model": str(smollm2), "role": "coder", "n_ctx": 1024, "parallel": 2, "n_threads": 1}},
        "router": {"program": str(prog), "kind": "tfidf", "default_agent": "chat"},
        "fallback": ["chat"], "vram": {"budget_mib": 0}, "gateway": {"port": base + 3},
        "workers": {"start_port": base, "log_dir": str(tmp_path / "logs")},
        "monitor": {"csv": str(tmp_path / "monitor.csv")}}))
    return spec


def test_routed_loads_at_two_concurrencies_in_one_swarm_load(smollm2, tmp_path):
    prog, labels = make_router(tmp_path)
    cfg = load_swarm(write_spec(tmp_path, smollm2, prog))
    base = {"n": 4, "profile": "routed", "labels": str(labels), "max_tokens": 3, "transport": "bus",
            "closed_loop": True, "results": str(tmp_path / "results"), "out": str(tmp_path / "out")}
    with BenchSession(cfg, lambda _m: None) as session:
        pids = {n: w.pid for n, w in session.swarm.supervisor.workers.items()}
        runs = [session.run(BenchConfig(**base, concurrency=c), label=f"c{c}") for c in (1, 2)]
        assert {n: w.pid for n, w in session.swarm.supervisor.workers.items()} == pids  # not reloaded
    for r, c in zip(runs, (1, 2), strict=True):
        assert r["ok"] == 4 and r["concurrency"] == c and r["route_sources"] == {"router": 4}
        acc = r["accuracy"]
        assert acc["all"]["n"] == 4 and sum(v["n"] for k, v in acc.items() if k.startswith("kind:")) == 4
    rows = ResultsTable(tmp_path / "results").read(source="bench")
    assert len(rows) == 8 and set(rows.subject) <= {"easy", "mmlu"} and set(rows.task) == {"serving-routed"}
    assert set(rows.route) == {"router"}
    # the rows' correct column is the summary's count
    assert rows.correct.sum() == sum(r["accuracy"]["all"]["correct"] for r in runs)
    with pytest.raises(ConfigError, match="needs --labels"):
        BenchConfig(profile="routed")


def test_serving_campaign_routed_with_the_agents_alone_baseline(smollm2, tmp_path):
    prog, labels = make_router(tmp_path)
    spec = write_spec(tmp_path, smollm2, prog)
    out = tmp_path / "campaign"
    res = subprocess.run([sys.executable, str(REPO / "benchmarks/serving_campaign.py"), "--spec", str(spec),
                          "--profile", "routed", "--labels", str(labels), "--n", "4", "--concurrency", "1,2",
                          "--max-tokens", "3", "--alone-n", "2", "--alone-concurrency", "1", "--no-sweep",
                          "--no-compare", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    s = summary["specs"]["routed"]
    assert summary["routed"] is True and set(s["p95_ms"]) == {"1", "2"} and all(v > 0 for v in s["tok_s"].values())
    assert s["measure"] == ["rss"] and set(s["planner_error_pct"]) == {"chat", "coder"}
    report = json.loads((out / "campaign.json").read_text())
    alone = report["specs"][0]["alone"]
    assert [r["agent"] for r in alone["alone"]] == ["chat", "coder"]
    assert alone["sum_alone_tok_s"] == pytest.approx(sum(r["tok_s"] for r in alone["alone"]))
    assert s["all_at_once_vs_sum_alone"] == pytest.approx(alone["all_at_once_tok_s"] / alone["sum_alone_tok_s"],
                                                          abs=0.0006)  # the ratio is stored to 3 decimals
    md = (out / "campaign.md").read_text()
    assert "Each agent alone vs all at once" in md and "Accuracy of the answers at 2 clients" in md


def test_campaign_summary_has_speedup_vs_the_one_gpu_baseline_and_per_gpu_placement():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import serving_campaign as sc

    def bench(c: int, tok_s: float) -> dict:
        return {"concurrency": c, "tok_s": tok_s, "latency_ms": {"p95": 100.0}, "wh_per_mtok": None,
                "per_agent": {"a": {"requests": 1}}}

    mem = {"agents": [{"agent": "a", "measure": "vram", "measured_mib": 300.0, "planned_mib": 290.0,
                       "planned_by_gpu_mib": {0: 140.0, 1: 150.0}, "measured_by_gpu_mib": {0: 146.0}}]}
    report = {"started": "2026-11-30 22:00:00 UTC", "device": "x", "profile": "routed", "max_tokens": 128, "n": 4,
              "baseline": "one", "specs": [
                  {"name": "two", "benches": [bench(5, 300.0), bench(20, 900.0)], "memory": mem},
                  {"name": "one", "benches": [bench(5, 200.0), bench(20, 500.0)], "memory": {"agents": []}}]}
    out = sc.summary_json(report)
    assert out["speedup_vs_one_gpu"] == {"two": {"5": 1.5, "20": 1.8}}
    assert out["specs"]["two"]["placement"] == {"a": {"gpus": ["0", "1"], "planned_vs_measured_mib": {
        "0": [140.0, 146.0], "1": [150.0, None]}}}


def test_a_workload_of_n_is_the_first_n_of_a_longer_one(tmp_path):
    """The serving campaign reads a spec's tasks once and gives each run the first n: that must equal the run's own
    workload of n."""
    from serving.bench import make_workload

    prog, labels = make_router(tmp_path)
    long, short = routed_workload(labels, prog, 50, seed=3), routed_workload(labels, prog, 7, seed=3)
    assert [(it.id, it.messages) for it in long[:7]] == [(it.id, it.messages) for it in short]
    long, short = make_workload("mixed", 30, rate=2.0, seed=3), make_workload("mixed", 7, rate=2.0, seed=3)
    assert [(it.id, it.messages, it.at) for it in long[:7]] == [(it.id, it.messages, it.at) for it in short]


def test_requests_the_router_could_not_place_are_said_on_stderr_and_in_the_row(smollm2, tmp_path, capsys):
    prog, labels = make_router(tmp_path, agents=("ghost", "phantom"))  # a program for agents this swarm lacks
    cfg = load_swarm(write_spec(tmp_path, smollm2, prog))
    bc = BenchConfig(n=3, profile="routed", labels=str(labels), max_tokens=2, transport="bus", closed_loop=True,
                     concurrency=1, results=str(tmp_path / "results"), out=str(tmp_path / "out"))
    with BenchSession(cfg, lambda _m: None) as session:
        run = session.run(bc, label="lost")
    assert run["route_sources"] == {"router-unknown": 3}
    assert "note: lost: 3 of 3 model=auto requests did not get the router's decision and went to 'chat'" in \
        capsys.readouterr().err
    assert set(ResultsTable(tmp_path / "results").read(source="bench").route) == {"router-unknown"}
