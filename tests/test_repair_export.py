"""Real DPO step (trl + peft LoRA) on SmolLM2 dequantized from its GGUF, then back to GGUF: merged,
converted by llama.cpp's converter, requantized, loaded by llama.cpp and answering; the GGUF LoRA too."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from evals.task import load_task
from quantswarm.engine import GenerationParams, open_engine
from quantswarm.loaders import load_gsm8k
from quantswarm.registry import inspect_gguf
from repair.dpo_trainer import dequantize_gguf, train_dpo
from repair.export import export_repaired
from repair.pairs import ChatTemplate, PairSet, gold_trace, make_pair
from repair.repair_config import RepairConfig

QUESTION = [{"role": "user", "content": "Tom has 3 apples and buys 4 more. How many apples does he have?"}]


def gold_pairs(smollm2, shared_data) -> PairSet:
    """Two GSM8K train items as pairs: gold rationale chosen, a wrong answer rejected."""
    task = load_task("gsm8k_cot_zeroshot")
    server = open_engine(str(smollm2), backend="llama-server", n_ctx=1024, parallel=1)
    template = ChatTemplate(server.url)
    items = load_gsm8k("train", limit=2, seed=1, data_dir=shared_data)
    pairs = PairSet([make_pair(task, it, template.render(task.messages(it)), gold_trace(it), "#### -1", "gold")
                     for it in items])
    template.close()
    server.close()
    return pairs


@pytest.fixture(scope="module")
def trained(smollm2, shared_data, tmp_path_factory):
    work = tmp_path_factory.mktemp("repair")
    base = dequantize_gguf(smollm2, work / "reference-hf", log=lambda s: None)
    pairs = gold_pairs(smollm2, shared_data)
    cfg = RepairConfig(agent=str(smollm2), out_dir=str(work), max_steps=1, batch_size=2, grad_accum=1,
                       max_length=320, warmup_ratio=0.0, lora_r=8, lora_alpha=16, max_minutes=3)
    logs: list[str] = []
    result = train_dpo(cfg, pairs, base, work / "adapter", log=logs.append)
    return cfg, base, result, logs, work


def test_dpo_trains_a_lora_adapter(trained):
    cfg, base, result, logs, work = trained
    assert result.steps == 1 and result.pairs == 2 and result.device == "cpu" and result.dtype == "float32"
    assert result.history and "loss" in result.history[-1] and "rewards/accuracies" in result.history[-1]
    assert any(line.startswith("[dpo step 1/1]") for line in logs)
    weights = load_file(work / "adapter" / "adapter_model.safetensors")
    lora_b = [t for k, t in weights.items() if "lora_B" in k]
    assert lora_b and any(torch.count_nonzero(t) for t in lora_b), "one real step moves LoRA B off zero"
    meta = json.loads((work / "adapter" / "repair_meta.json").read_text())
    assert meta["versions"]["trl"] and meta["config"]["beta"] == cfg.beta and meta["config"]["attention"] == "sdpa"
    assert result.attention == "sdpa" and result.cudnn_sdpa is False
    assert result.skipped_steps == []


def test_merged_requantized_gguf_loads_and_answers(trained, smollm2):
    cfg, base, result, logs, work = trained
    files = export_repaired(base, work / "adapter", work / "export", "smol", "Q4_0", log=lambda s: None)
    merged = load_file(files["merged_hf"] / "model.safetensors")
    original = load_file(base / "model.safetensors")
    key = "model.layers.0.self_attn.q_proj.weight"
    assert merged[key].shape == original[key].shape and not torch.equal(merged[key], original[key])
    assert inspect_gguf(files["f16"]).file_type == "F16"
    assert inspect_gguf(files["quant"]).file_type == "Q4_0"
    engine = open_engine(str(files["quant"]), backend="llama-cpp-python", n_ctx=512)
    try:
        answer = engine.chat(QUESTION, GenerationParams(max_tokens=8))
    finally:
        engine.close()
    assert answer.completion_tokens > 0 and answer.text.strip()
    # the cheap alternative: the degraded agent's file plus the GGUF LoRA
    engine = open_engine(str(smollm2), backend="llama-cpp-python", n_ctx=512, lora_path=str(files["lora"]))
    try:
        answer = engine.chat(QUESTION, GenerationParams(max_tokens=8))
    finally:
        engine.close()
    assert answer.completion_tokens > 0 and answer.text.strip()


def test_dpo_with_an_sft_term_trains_and_logs_both_losses(trained, smollm2, shared_data):
    """``--loss-type sigmoid,sft`` (RPO): the combined loss runs one real step on the same base and pairs."""
    _, base, _, _, work = trained
    pairs = gold_pairs(smollm2, shared_data)
    cfg = RepairConfig(agent=str(smollm2), out_dir=str(work / "rpo"), max_steps=1, batch_size=2, grad_accum=1,
                       max_length=320, warmup_ratio=0.0, lora_r=8, lora_alpha=16, max_minutes=3,
                       loss_type="sigmoid,sft", loss_weights="1,1")
    result = train_dpo(cfg, pairs, base, work / "rpo" / "adapter", log=lambda s: None)
    assert result.steps == 1 and result.history and torch.isfinite(torch.tensor(result.history[-1]["loss"]))
    meta = json.loads((work / "rpo" / "adapter" / "repair_meta.json").read_text())
    assert meta["config"]["loss_type"] == "sigmoid,sft"


PROMPTS = ["What is 2 + 3? Answer with the number only.", "Name a color.", "Reverse the word 'cat'."]


def _greedy(path: str, lora: str | None = None) -> list[str]:
    eng = open_engine(path, backend="llama-server", n_ctx=512, parallel=1, **({"lora_path": lora} if lora else {}))
    try:
        return [eng.chat([{"role": "user", "content": p}], GenerationParams(max_tokens=12)).text for p in PROMPTS]
    finally:
        eng.close()


def test_untrained_round_trip_reproduces_greedy_answers(trained, smollm2_ladder, llama_server_bin):
    """HF weights dequantized by transformers -> llama.cpp's converter -> F16 GGUF answers exactly like the F16 that
    llama-quantize made from the same Q4_1 file (catches a wrong q/k permutation or tokenizer)."""
    from evals.ladder import read_ladder
    from repair.export import hf_to_gguf

    _, base, _, _, work = trained
    f16 = hf_to_gguf(base, work / "roundtrip-F16.gguf", "f16", log=lambda s: None)
    reference = read_ladder(smollm2_ladder)[0].path
    assert _greedy(str(f16)) == _greedy(reference)


def test_gguf_lora_loads_in_llama_server_and_changes_the_output(trained, smollm2, llama_server_bin):
    from repair.export import lora_to_gguf

    _, base, _, _, work = trained
    lora = lora_to_gguf(work / "adapter", base, work / "lora-F16.gguf", "f16", log=lambda s: None)
    msgs = [{"role": "user", "content": "Question: 2+2=? A. 3 B. 4 C. 5 D. 6\nAnswer:"}]
    plain = open_engine(str(smollm2), backend="llama-server", n_ctx=512, parallel=1)
    with_lora = open_engine(str(smollm2), backend="llama-server", n_ctx=512, parallel=1, lora_path=str(lora))
    try:
        a, b = plain.choice_logprobs(msgs, list("ABCD")), with_lora.choice_logprobs(msgs, list("ABCD"))
    finally:
        plain.close()
        with_lora.close()
    assert set(a) == set(b) and a != b, "the trained adapter moves the next-token distribution"
