"""The planner's KV cache and compute buffer against what a real llama-server (SmolLM2, CPU) logs at load."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from quantswarm.engine.server import LlamaServerEngine
from quantswarm.errors import ConfigError
from quantswarm.registry import inspect_gguf
from serving.llama_log import parse_buffer_sizes, read_buffer_sizes
from serving.memory_model import (
    GraphDims,
    compute_buffer_bytes,
    is_quantized,
    kv_cells,
    kv_type_bytes,
)
from serving.planner import MIB, ModelShape, plan_vram
from serving.swarm_config import load_swarm

LOG = """\
0.00.186.229 I load_tensors:   CPU_Mapped model buffer size =    92.10 MiB
0.00.187.726 I llama_context:        CPU  output buffer size =     0.38 MiB
0.00.187.838 I llama_kv_cache:        CPU KV buffer size =    22.50 MiB
0.00.206.168 I llama_kv_cache: size =   22.50 MiB (   512 cells,  30 layers,  2/2 seqs), K (f16):   11.25 MiB
0.00.211.161 I sched_reserve:        CPU compute buffer size =    14.01 MiB
load_tensors:        CUDA0 model buffer size =   300.50 MiB
sched_reserve:      CUDA0 compute buffer size =   120.00 MiB
sched_reserve:  CUDA_Host compute buffer size =     9.25 MiB
"""


def write_spec(tmp_path: Path, model: Path, agent: dict, workers: dict | None = None) -> Path:
    p = tmp_path / "swarm.yaml"
    p.write_text(yaml.safe_dump({"agents": {"a": {"model": str(model), **agent}}, "vram": {"budget_mib": 0},
                                 "workers": workers or {}}))
    return p


# --- pure arithmetic -------------------------------------------------------------------------------

def test_kv_type_bytes_from_ggml_block_sizes():
    assert kv_type_bytes("f32") == 4 and kv_type_bytes("f16") == 2 and kv_type_bytes("bf16") == 2
    assert kv_type_bytes("q8_0") == 34 / 32 == 1.0625
    assert kv_type_bytes("q4_0") == 18 / 32 == 0.5625
    assert kv_type_bytes("q5_1") == 24 / 32
    assert is_quantized("q4_0") and not is_quantized("f16")
    with pytest.raises(ValueError, match="'q3_x' is not a ggml type"):
        kv_type_bytes("q3_x")


def test_kv_cells_are_padded_like_llama_context():
    assert kv_cells(512, 2) == (512, 1024)
    assert kv_cells(100, 1) == (256, 256)  # n_ctx padded to 256
    assert kv_cells(300, 3) == (512, 1536)  # 900 -> 1024 total, 341 per slot -> 512


def test_compute_buffer_grows_with_context_only_without_flash_attention():
    dims = GraphDims(n_embd=576, n_ff=1536, n_head=9, n_embd_k_gqa=192, n_vocab=49152)
    on = [compute_buffer_bytes(dims, c, 1, 512, flash_attn=True) for c in (512, 4096)]
    off = [compute_buffer_bytes(dims, c, 1, 512, flash_attn=False) for c in (512, 4096)]
    assert on[1] - on[0] == 512 * (4096 - 512) * 2  # only the f16 KQ mask grows
    assert off[1] - off[0] == 512 * (4096 - 512) * (9 + 1) * 4  # KQ scores (n_head) + f32 mask
    # slots do not grow it (the per-slot context does), a smaller ubatch shrinks it
    assert compute_buffer_bytes(dims, 512, 4, 512) == compute_buffer_bytes(dims, 512, 1, 512)
    assert compute_buffer_bytes(dims, 512, 1, 128) < on[0] / 3


def test_log_parser_reads_every_buffer_line():
    b = parse_buffer_sizes(LOG)
    assert b.model == {"CPU_Mapped": 92.10, "CUDA0": 300.50}
    assert b.kv == {"CPU": 22.50} and b.output == {"CPU": 0.38}
    assert b.compute == {"CPU": 14.01, "CUDA0": 120.0, "CUDA_Host": 9.25}
    assert b.total("compute") == pytest.approx(143.26) and b.total("compute", "CUDA") == pytest.approx(129.25)
    assert not parse_buffer_sizes("llama_server: model loaded").found


# --- spec --------------------------------------------------------------------------------------------

def test_cache_type_is_validated_and_resolved(tmp_path, smollm2):
    cfg = load_swarm(write_spec(tmp_path, smollm2, {}, {"kv_cache_type": "q8_0"}))
    assert cfg.agents["a"].kv_cache_type == "q8_0" and cfg.agents["a"].flash_attn == "on"
    cfg = load_swarm(write_spec(tmp_path, smollm2, {"kv_cache_type": "q4_0"}, {"kv_cache_type": "q8_0"}))
    assert cfg.agents["a"].kv_cache_type == "q4_0"
    # YAML's unquoted on/off arrive as booleans; type names in capitals are llama.cpp's names all the same
    workers = {"kv_cache_type": "Q8_0", "flash_attn": False}
    cfg = load_swarm(write_spec(tmp_path, smollm2, {"flash_attn": True}, workers))
    assert (cfg.agents["a"].flash_attn, cfg.agents["a"].kv_cache_type, cfg.workers.flash_attn) == ("on", "q8_0", "off")
    bad = [({"kv_cache_type": "q3"}, {}, r"^swarm\.yaml: agents\.a\.kv_cache_type: 'q3' is not one of"),
           ({}, {"kv_cache_type": "int8"}, r"^swarm\.yaml: workers\.kv_cache_type: 'int8' is not one of"),
           ({}, {"kv_cache_type": "q8_0", "flash_attn": "off"},
            r"^swarm\.yaml: workers\.kv_cache_type: q8_0 quantizes the V cache, .* but workers\.flash_attn is off"),
           ({"flash_attn": False}, {"kv_cache_type": "q8_0"}, r"but agents\.a\.flash_attn is off"),
           ({"kv_cache_type": "q4_0", "flash_attn": "off"}, {}, r"agents\.a\.kv_cache_type: q4_0 quantizes"),
           ({"extra_args": ["-ctk", "q8_0"]}, {}, r"agents\.a\.extra_args\[0\]: -ctk is set from "
                                                   r"agents\.a\.kv_cache_type")]
    for agent, workers, message in bad:
        with pytest.raises(ConfigError, match=message) as exc:
            load_swarm(write_spec(tmp_path, smollm2, agent, workers))
        assert "\n" not in str(exc.value)
    p = tmp_path / "old.yaml"
    p.write_text(yaml.safe_dump({"agents": {"a": {"model": str(smollm2)}}, "vram": {"kv_type_bytes": 1}}))
    with pytest.raises(ConfigError, match=r"vram\.kv_type_bytes: replaced by workers\.kv_cache_type"):
        load_swarm(p)


def test_planner_counts_the_cache_type(tmp_path, smollm2):
    info = inspect_gguf(smollm2)
    f16 = ModelShape.from_gguf(info)
    q8 = ModelShape.from_gguf(info, "q8_0")
    assert q8.kv_bytes(info.n_layers, 1) == f16.kv_bytes(info.n_layers, 1) * 1.0625 / 2
    cfg = load_swarm(write_spec(tmp_path, smollm2, {"n_ctx": 1024, "parallel": 2}, {"kv_cache_type": "q4_0"}))
    plan = plan_vram(cfg, 0).agents["a"]
    assert plan.cpu_kv == info.n_layers * info.n_head_kv * info.head_dim * 2 * 0.5625 * 2048


# --- against a real llama-server ----------------------------------------------------------------------

SETTINGS = [  # (n_ctx per slot, parallel, KV cache type, flash attention)
    (512, 1, "f16", "on"),
    (1024, 4, "q8_0", "on"),
    (2048, 2, "f16", "off"),
]


@pytest.mark.parametrize(("n_ctx", "parallel", "cache", "fa"), SETTINGS)
def test_plan_matches_llama_server_log(tmp_path, smollm2, llama_server_bin, n_ctx, parallel, cache, fa):
    cfg = load_swarm(write_spec(tmp_path, smollm2, {"n_ctx": n_ctx, "parallel": parallel},
                                {"kv_cache_type": cache, "flash_attn": fa}))
    a = cfg.agents["a"]
    plan = plan_vram(cfg, 0).agents["a"]
    log = tmp_path / "server.log"
    with LlamaServerEngine(str(smollm2), n_ctx=n_ctx, parallel=parallel, n_threads=1, binary=llama_server_bin,
                           kv_cache_type=a.kv_cache_type, flash_attn=a.flash_attn, n_ubatch=a.n_ubatch,
                           log_verbosity=4, log_path=log) as eng:
        assert eng.healthy()
    logged = read_buffer_sizes(log)
    kv_mib, compute_mib = plan.cpu_kv / MIB, plan.compute / MIB
    print(f"n_ctx {n_ctx} x {parallel} {cache} fa {fa}: KV planned {kv_mib:.3f} logged {logged.total('kv')} MiB; "
          f"compute planned {compute_mib:.3f} logged {logged.total('compute')} MiB")
    assert logged.kv and logged.compute, f"no buffer sizes in {log}"
    assert kv_mib == pytest.approx(logged.total("kv"), abs=0.006)  # exact, up to the log's 2 decimals
    assert compute_mib == pytest.approx(logged.total("compute"), rel=0.05)
