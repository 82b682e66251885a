"""Swarm spec validation, VRAM-planner arithmetic against the real GGUF's tensors, and serving's pure helpers."""

from __future__ import annotations

import re
from pathlib import Path

import gguf
import pytest
import yaml

from quantswarm.errors import ConfigError, DataError
from quantswarm.registry import inspect_gguf
from serving.bench import BenchConfig, make_workload
from serving.metrics import Metrics
from serving.monitor import Monitor, energy_summary, plot_monitor, read_samples
from serving.planner import ModelShape, is_oom, plan_vram, priority_order
from serving.swarm_config import config_from_dict, load_swarm
from serving.validation import check_answer

REPO = Path(__file__).resolve().parent.parent


def spec(model: Path, **over) -> dict:
    base = {
        "agents": {
            "router": {"model": str(model), "role": "router", "n_ctx": 256, "parallel": 1},
            "chat": {"model": str(model), "n_ctx": 512, "parallel": 2, "usage": 0.2},
            "coder": {"model": str(model), "role": "coder", "n_ctx": 1024, "parallel": 2, "usage": 0.9},
        },
        "fallback": ["chat", "coder"],
        "vram": {"budget_mib": 0},
    }
    for k, v in over.items():
        base[k] = v
    return base


def load(tmp_path: Path, data: dict):
    p = tmp_path / "swarm.yaml"
    p.write_text(yaml.safe_dump(data))
    return load_swarm(p)


# --- spec ----------------------------------------------------------------------------------------

def test_shipped_specs_load(smollm2, monkeypatch):
    monkeypatch.setenv("QUANTSWARM_MODELS", str(smollm2.parent))
    cfg = load_swarm(REPO / "data/swarms/cpu-demo.yaml")
    assert set(cfg.agents) == {"router", "chat", "coder"}
    assert cfg.default_agent() == "chat" and cfg.router_agent() == "router"
    # ports: start_port + index in sorted agent-name order
    assert (cfg.agents["chat"].port, cfg.agents["coder"].port, cfg.agents["router"].port) == (10001, 10002, 10003)
    assert cfg.gateway.host == "127.0.0.1" and cfg.workers.host == "127.0.0.1"


@pytest.mark.parametrize("spec", ["h100-5agents.yaml", "h100-qwen-16gib.yaml", "h100-qwen-tight.yaml"])
def test_h100_examples_name_missing_models(tmp_path, monkeypatch, spec):
    monkeypatch.setenv("SWARM_MODELS", str(tmp_path))
    with pytest.raises(ConfigError, match=r"agents\.\w+\.(model|quantize_from\.source): .* does not exist"):
        load_swarm(REPO / "data/swarms" / spec)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["agents"]["chat"].update(temperature=1), r"agents\.chat\.temperature: unknown key"),
        (lambda d: d.update(colour="red"), r"^swarm\.yaml: colour: unknown key"),
        (lambda d: d["agents"]["chat"].update(n_ctx="big"), r"agents\.chat\.n_ctx: expected an integer"),
        (lambda d: d["agents"]["chat"].update(parallel=0), r"agents\.chat\.parallel: must be at least 1"),
        (lambda d: d["agents"]["chat"].update(model="nope.gguf"), r"agents\.chat\.model: .*nope\.gguf does not exist"),
        (lambda d: d["agents"]["chat"].update(role="poet"), r"agents\.chat\.role: 'poet' is not one of"),
        (lambda d: d.update(fallback=["chat", "ghost"]), r"fallback\[1\]: unknown agent 'ghost'"),
        (lambda d: d.update(router={"default_agent": "ghost"}), r"router\.default_agent: unknown agent 'ghost'"),
        (lambda d: d.update(router={"program": "no/such/dir"}), r"router\.program: .* does not exist"),
        (lambda d: d.update(vram={"budget_mib": "lots"}), r"vram\.budget_mib: expected an integer MiB"),
        (lambda d: d.update(gateway={"port": 10002}), r"gateway\.port: 10002 collides with worker ports"),
        (lambda d: d.update(gateway={"api_key": "  "}), r"gateway\.api_key: empty"),
        (lambda d: d.update(bus={"tasks_subject": "tasks.>"}), r"bus\.tasks_subject: .* not a plain NATS subject"),
        (lambda d: d.update(bus={"dead_subject": "tasks.new"}), r"bus\.dead_subject: .* also bus\.tasks_subject"),
        (lambda d: d.update(agents={}), r"agents: expected a mapping .* at least one agent"),
        (lambda d: d["agents"].update(auto={"model": "x.gguf"}), r"agents\.auto: agent names"),
    ],
)
def test_spec_errors_name_their_key(tmp_path, smollm2, mutate, message):
    data = spec(smollm2)
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, data)


def test_env_and_relative_paths(tmp_path, smollm2, monkeypatch):
    data = spec(smollm2)
    data["models_dir"] = "${QS_TEST_MODELS}"
    data["agents"]["chat"]["model"] = smollm2.name
    with pytest.raises(ConfigError, match=r"models_dir: environment variable \$\{QS_TEST_MODELS\} is not set"):
        load(tmp_path, data)
    monkeypatch.setenv("QS_TEST_MODELS", str(smollm2.parent))
    cfg = load(tmp_path, data)
    assert Path(cfg.agents["chat"].model) == smollm2
    data["gateway"] = {"api_key": "${QS_TEST_KEY:-sekrit}"}
    assert load(tmp_path, data).gateway.api_key == "sekrit"


def test_quantize_from_allows_a_missing_model(tmp_path, smollm2):
    data = spec(smollm2)
    data["agents"]["chat"].update(model=str(tmp_path / "made.gguf"),
                                  quantize_from={"source": str(smollm2), "type": "Q8_0"})
    assert load(tmp_path, data).agents["chat"].quantize_from.type == "Q8_0"
    data["agents"]["chat"]["quantize_from"]["type"] = "Q9_9"
    with pytest.raises(ConfigError, match=r"agents\.chat\.quantize_from\.type: 'Q9_9' is not one of"):
        load(tmp_path, data)


# --- planner against the real GGUF ---------------------------------------------------------------

def tensor_bytes(path: Path) -> dict[str, int]:
    return {t.name: int(t.n_bytes) for t in gguf.GGUFReader(path).tensors}


def test_shape_matches_tensor_table(smollm2):
    sizes = tensor_bytes(smollm2)
    info = inspect_gguf(smollm2)
    shape = ModelShape.from_gguf(info)
    n = info.n_layers
    block = [sum(v for k, v in sizes.items() if k.startswith(f"blk.{i}.")) for i in range(n)]
    assert shape.layer_bytes == block
    tied = "output.weight" not in sizes  # SmolLM2 ties its output head to token_embd
    head = (sizes["token_embd.weight"] if tied else sizes["output.weight"]) + sizes["output_norm.weight"]
    assert shape.gpu_weight_bytes(0) == 0
    assert shape.gpu_weight_bytes(5) == sum(block[n - 5:])  # the last 5 blocks go first
    assert shape.gpu_weight_bytes(n) == sum(block)
    assert shape.gpu_weight_bytes(n + 1) == sum(block) + head
    # every byte of the file's tensors is somewhere: CPU-only holds them all
    assert shape.cpu_weight_bytes(0) == sum(sizes.values())
    assert shape.cpu_weight_bytes(n + 1) == sizes["token_embd.weight"]  # embeddings never leave the host
    # KV: n_layers x n_kv_heads x head_dim x 2 (K,V) x 2 bytes (f16) per token
    assert shape.kv_bytes(n, 1) == n * info.n_head_kv * info.head_dim * 2 * 2 == info.kv_bytes_per_token()
    assert shape.kv_bytes(10, 100) == 10 * info.n_head_kv * info.head_dim * 2 * 2 * 100


def test_plan_fits_budget_and_prefers_router_then_usage(tmp_path, smollm2):
    cfg = load(tmp_path, spec(smollm2, vram={"budget_mib": 1400, "headroom_mib": 100, "overhead_mib": 300}))
    assert priority_order(cfg) == ["router", "coder", "chat"]
    shape = ModelShape.from_gguf(inspect_gguf(smollm2))
    plan = plan_vram(cfg, 1400)
    r, coder, chat = plan.agents["router"], plan.agents["coder"], plan.agents["chat"]
    assert r.full and r.n_gpu_layers == shape.n_layers + 1
    # the router's numbers are exactly the GGUF arithmetic: weights + KV(n_ctx x slots) + overhead + compute buffer
    assert r.gpu_weights == shape.gpu_weight_bytes(31)
    assert r.gpu_kv == shape.kv_bytes(30, 256 * 1)
    # compute buffer, flash attention on, f16 cache: ubatch min(256 cells, 512) x (3 n_ff + 4 n_embd) f32 + f16 mask
    info = inspect_gguf(smollm2)
    assert r.compute == 256 * (4 * (3 * info.n_ff + 4 * info.n_embd) + 2 * 256)
    assert r.gpu_bytes == r.gpu_weights + r.gpu_kv + 300 * 2**20 + r.compute
    assert plan.gpu_bytes <= (1400 - 100) * 2**20
    assert coder.n_gpu_layers >= chat.n_gpu_layers  # higher usage keeps more layers
    # a budget that fits everything puts everything on GPU; the host keeps only the embeddings
    big = plan_vram(cfg, 8000)
    assert all(a.full for a in big.agents.values())
    assert big.cpu_bytes == 3 * shape.host_only_bytes + 3 * shape.kv_bytes(0, 1)
    cpu = plan_vram(cfg, 0)
    assert cpu.budget_bytes is None and cpu.gpu_bytes == 0 and all(a.n_gpu_layers == 0 for a in cpu.agents.values())


def test_budget_too_small_for_router(tmp_path, smollm2):
    cfg = load(tmp_path, spec(smollm2, vram={"budget_mib": 1000, "headroom_mib": 100, "overhead_mib": 300}))
    with pytest.raises(ConfigError, match=r"vram\.budget_mib: 1100 MiB cannot hold even the router agent 'router'"):
        plan_vram(cfg, 1100)
    # 3 contexts of 300 MiB plus their compute buffers (~12 MiB each) and 100 MiB headroom exceed 1000 MiB
    with pytest.raises(ConfigError, match=r"vram\.budget_mib: 1000 MiB cannot hold the headroom .* plus their "
                                          r"compute buffers \(93\d MiB in all\)"):
        plan_vram(cfg, 1000)


def test_pinned_layers_and_oom_cap(tmp_path, smollm2):
    data = spec(smollm2, vram={"budget_mib": 4000, "headroom_mib": 100, "overhead_mib": 100})
    data["agents"]["chat"]["n_gpu_layers"] = 7
    cfg = load(tmp_path, data)
    plan = plan_vram(cfg, 4000)
    assert plan.agents["chat"].n_gpu_layers == 7 and plan.agents["chat"].pinned
    capped = plan_vram(cfg, 4000, reduce={"coder": 12})
    assert capped.agents["coder"].n_gpu_layers == 12
    assert is_oom("ggml_backend_cuda_buffer_type_alloc_buffer: allocating 512.00 MiB on device 0: "
                  "cudaMalloc failed: out of memory")
    assert not is_oom("llama_server: model loaded")


# --- pure helpers ----------------------------------------------------------------------------

def test_validation_hook():
    assert check_answer("  ", role="general", wants_json=False) == "empty answer"
    assert check_answer('{"a": 1}', role="general", wants_json=True) is None
    assert check_answer('```json\n{"a": 1}\n```', role="general", wants_json=True) is None
    assert check_answer("{'a': 1", role="general", wants_json=True).startswith("malformed JSON")
    assert check_answer("```python\ndef f(x):\n    return x\n```", role="coder", wants_json=False) is None
    assert "does not compile" in check_answer("```python\ndef f(x) return\n```", role="coder", wants_json=False)
    assert check_answer("```python\ndef f(x) return\n```", role="general", wants_json=False) is None


def test_workloads_are_deterministic_and_paced():
    a = make_workload("mixed", 8, rate=4.0, seed=1)
    b = make_workload("mixed", 8, rate=4.0, seed=1)
    assert [x.messages for x in a] == [x.messages for x in b]
    assert [x.kind for x in a[:4]] == ["math", "knowledge", "code", "short"]
    assert [x.at for x in a[:3]] == [0.0, 0.25, 0.5]
    storm = make_workload("toolstorm", 25, rate=10.0)
    assert {x.at for x in storm[:10]} == {0.0} and storm[10].at == pytest.approx(1.0) and storm[0].wants_json
    research = make_workload("research", 1, rate=0, min_ctx=256)[0]
    assert len(research.messages[1]["content"].split()) < 256
    with pytest.raises(ConfigError, match="--profile"):
        BenchConfig(profile="chaos")


def test_metrics_render_prometheus_text():
    m = Metrics()
    m.inc("quantswarm_requests_total", agent="chat", source="named", outcome="ok")
    m.inc("quantswarm_requests_total", agent="chat", source="named", outcome="ok")
    m.observe("quantswarm_request_latency_ms", 12.5, agent="chat")
    text = m.render([("quantswarm_worker_up", {"agent": "b"}, 1.0, "up"),
                     ("quantswarm_worker_restarts", {"agent": "b"}, 0.0, "r"),
                     ("quantswarm_worker_up", {"agent": "a"}, 0.0, "up")])
    assert 'quantswarm_requests_total{agent="chat",outcome="ok",source="named"} 2' in text
    assert 'quantswarm_request_latency_ms_count{agent="chat"} 1' in text
    # each metric family is contiguous, headed by one HELP and one TYPE line
    names = [re.match(r"[a-z_]+", ln).group(0) for ln in text.splitlines() if not ln.startswith("#")]
    families = [n.removesuffix("_sum").removesuffix("_count") for n in names]
    assert families == sorted(families, key=families.index) and text.count("# TYPE quantswarm_worker_up") == 1
    assert m.value("quantswarm_requests_total", agent="chat") == 2


def test_monitor_without_nvml_records_nothing(tmp_path):
    from quantswarm.energy import nvml_ok

    if nvml_ok():
        pytest.skip("this machine has NVML")
    said = []
    mon = Monitor(tmp_path / "m.csv", 0.05, log=said.append).start()
    mon.stop()
    assert len(said) == 1 and "recording nothing" in said[0] and not (tmp_path / "m.csv").exists()


def test_energy_arithmetic_and_plot(tmp_path):
    """Energy from the counter and from integrated power, on a hand-written CSV in the monitor's format."""
    header = "t,gpu,power_w,energy_mj,temp_c,sm_util,mem_util,vram_used_mib,vram_total_mib,process_vram_mib\n"
    rows = ["100.0,0,200,1000000,60,50,20,1000,81559,{}", "101.0,0,300,1250000,61,90,30,3000,81559,{}",
            "102.0,0,100,1450000,62,10,5,2000,81559,{}"]
    csv = tmp_path / "m.csv"
    csv.write_text(header + "\n".join(rows) + "\n")
    s = energy_summary(read_samples(csv), tokens=1000)
    assert s.joules == pytest.approx(450.0) and s.peak_vram_mib == 3000 and s.peak_temp_c == 62
    assert s.wh_per_mtok == pytest.approx(450 / 3600 / 1000 * 1e6)
    no_counter = csv.read_text().replace(",1000000,", ",,").replace(",1250000,", ",,").replace(",1450000,", ",,")
    csv.write_text(no_counter)
    assert energy_summary(read_samples(csv)).joules == pytest.approx((200 + 300) / 2 + (300 + 100) / 2)
    png = plot_monitor(csv, tmp_path / "m.png")
    assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="not a quantswarm monitor CSV"):
        read_samples(tmp_path / "bad.csv")


def test_config_from_dict_reports_file_name(tmp_path, smollm2):
    with pytest.raises(ConfigError, match=r"^x\.yaml: agents\.chat\.model"):
        data = spec(smollm2)
        data["agents"]["chat"]["model"] = ""
        config_from_dict(data, tmp_path / "x.yaml")


def test_learned_router_paths(tmp_path, smollm2):
    """router.kind: tfidf fits the router package's baseline on its shipped labels; router.program without it errors."""
    pytest.importorskip("sklearn")
    from router.baselines import TfidfRouter
    from router.labels import labels_from_jsonl
    from router.swarm import load_swarm as load_router_swarm
    from serving.routing import SwarmRouter

    rswarm = load_router_swarm(REPO / "data/routing/swarm.json")
    labeled = labels_from_jsonl(REPO / "data/routing/labeled.jsonl", rswarm)
    TfidfRouter.fit(labeled.examples, rswarm.strongest).save(tmp_path / "prog" / "tfidf.json")
    agents = {n: {"model": str(smollm2), "n_ctx": 64, "parallel": 1} for n in ("math", "coder", "generalist")}
    data = {"agents": agents, "router": {"program": "prog", "kind": "tfidf", "default_agent": "generalist"},
            "vram": {"budget_mib": 0}}
    r = SwarmRouter(load(tmp_path, data))
    assert r.mode.startswith("tfidf router")
    d = r.route("What is 17 + 25? Show the arithmetic step by step.")
    assert d.source in ("router", "router-unknown") and d.latency_ms > 0
    assert d.agent == ("math" if d.source == "router" else "generalist")
    code = r.route("Write a Python function that reverses a linked list, with a docstring.")
    assert code.agent in agents
    with pytest.raises(ConfigError, match=r"router\.program: .* has no tfidf\.json"):
        load(tmp_path, {**data, "router": {"program": ".", "kind": "tfidf"}})


def test_a_program_compiled_for_another_swarm_is_refused_in_one_line(tmp_path, smollm2):
    """The spec names the router program; every agent it was compiled for must be an agent of the spec."""
    import json

    from serving.swarm_config import load_swarm

    prog = tmp_path / "prog"
    prog.mkdir()
    (prog / "manifest.json").write_text(json.dumps({"agents": ["tiny", "qwen@Q4_K_M"]}))
    spec = tmp_path / "s.yaml"
    spec.write_text(f"""version: 1
models_dir: {smollm2.parent}
agents:
  tiny: {{model: {smollm2.name}, role: router}}
  big: {{model: {smollm2.name}}}
router: {{program: prog}}
""")
    with pytest.raises(ConfigError) as err:
        load_swarm(spec)
    msg = str(err.value)
    assert "\n" not in msg and "['qwen@Q4_K_M']" in msg and "agents here: tiny, big" in msg
    (prog / "manifest.json").write_text(json.dumps({"agents": ["tiny", "big"]}))
    assert load_swarm(spec).router.program == str(prog)


def test_partial_offload_term_applies_only_to_partly_offloaded_contexts(tmp_path, smollm2):
    vram = {"budget_mib": 1200, "headroom_mib": 100, "overhead_mib": 300}
    plain = plan_vram(load(tmp_path, spec(smollm2, vram=vram)), 1200)
    plan = plan_vram(load(tmp_path, spec(smollm2, vram={**vram, "partial_offload_mib": 50})), 1200)
    shape = ModelShape.from_gguf(inspect_gguf(smollm2))
    assert plain.agents["coder"].n_gpu_layers == 18 and plain.agents["coder"].overhead == 300 * 2**20
    router, coder, chat = plan.agents["router"], plan.agents["coder"], plan.agents["chat"]
    assert router.full and router.overhead == 300 * 2**20  # whole on the GPU: no term
    assert 1 <= coder.n_gpu_layers <= shape.n_layers and coder.overhead == 350 * 2**20
    assert chat.n_gpu_layers == 0 and chat.overhead == 300 * 2**20  # no layer on the GPU: no term
    # the term is planned, so fewer of the coder's layers fit (each SmolLM2 block is ~3.4 MiB)
    assert coder.n_gpu_layers == 4
    assert plan.gpu_bytes <= (1200 - 100) * 2**20


def test_energy_of_a_run_over_two_gpus_adds_up():
    from quantswarm.energy import EnergyMeter
    from serving.bench import energy_over_gpus

    a, b = EnergyMeter(0), EnergyMeter(1)
    a.joules, a.seconds, a.peak_vram_mib = 100.0, 10.0, 5000.0
    b.joules, b.seconds, b.peak_vram_mib = 50.0, 10.0, 3000.0
    out = energy_over_gpus({0: a, 1: b}, tokens=1000)
    assert out["joules"] == 150.0 and out["avg_power_w"] == 15.0
    assert out["wh_per_mtok"] == pytest.approx(150 / 3600 / 1000 * 1e6)
    assert out["per_gpu"][1] == {"joules": 50.0, "avg_power_w": 5.0, "wh_per_mtok": pytest.approx(50 / 3.6),
                                 "vram_peak_mib": 3000.0}
    b.joules = None  # one GPU without a reading: no total rather than a partial one
    assert "joules" not in energy_over_gpus({0: a, 1: b}, tokens=1000)


def test_worker_vram_is_summed_over_the_gpus_that_list_it(monkeypatch):
    import quantswarm.energy as energy
    from serving import workers

    readings = {0: {111: 900.0, 222: 4044.0}, 1: {111: 1200.0}}  # pid 111 is split over both GPUs

    def fake_sample(g: int):
        return energy.GpuSample(0.0, g, 0.0, None, 0.0, 0.0, 0.0, 0.0, 0.0, readings[g])

    monkeypatch.setattr(energy, "nvml_ok", lambda: True)
    monkeypatch.setattr(energy, "visible_gpus", lambda: [0, 1])
    monkeypatch.setattr(energy, "sample", fake_sample)
    assert workers.process_vram_by_gpu(111) == {0: 900.0, 1: 1200.0}
    assert workers.process_memory_mib(111) == (2100.0, "vram")
    assert workers.process_memory_mib(222) == (4044.0, "vram")
