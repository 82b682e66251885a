"""Repair stages that would do nothing are refused: the schedule arithmetic matches what trl's DPOTrainer really
does (a tiny Llama with SmolLM2's real tokenizer), and an adapter left at zero is detected from its safetensors."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from transformers import TrainerCallback

from repair.checks import (
    StageDidNothing,
    adapter_is_zero,
    check_adapter_trained,
    check_failures,
    check_pairs,
    check_schedule,
    check_schedule_for,
    lr_factors,
    plan_schedule,
    planned_steps,
    schedule_warning,
    warmup_steps,
)
from repair.repair_config import RepairConfig


def test_planned_steps_follow_the_trainers_rounding():
    assert planned_steps(8, 4, 2, 1.0) == 1  # the issue's run: 2 batches, one optimizer step
    assert planned_steps(9, 4, 2, 1.0) == 2  # 3 batches: the last step gets the one odd batch
    assert planned_steps(16, 4, 2, 3.0) == 6
    assert planned_steps(3, 4, 8, 1.0) == 1  # fewer batches than grad-accum still make a step
    assert planned_steps(16, 4, 2, 0.5) == 1
    assert planned_steps(8, 4, 2, 1.0, max_steps=5) == 5  # max_steps wins over epochs
    assert planned_steps(0, 4, 2, 1.0) == 0


def test_warmup_and_learning_rate_factors():
    assert warmup_steps(1, 0.1) == 1 and warmup_steps(10, 0.1) == 1 and warmup_steps(11, 0.1) == 2
    assert warmup_steps(10, 0.0) == 0 and warmup_steps(10, 3) == 3
    assert lr_factors(1, 1) == [0.0]
    assert lr_factors(3, 0) == pytest.approx([1.0, 0.75, 0.25])
    assert lr_factors(4, 2) == pytest.approx([0.0, 0.5, 1.0, 0.5])


def test_the_issues_configuration_is_refused_with_what_to_change():
    cfg = RepairConfig(agent="x.gguf")  # batch 4, grad-accum 2, 1 epoch, warmup 0.1
    with pytest.raises(StageDidNothing) as err:
        check_schedule_for(cfg, 8)
    msg = str(err.value)
    assert "8 pairs at batch 4 x grad-accum 2 x 1 epoch(s) make 1 optimizer step(s)" in msg
    assert "warmup (0.1 -> 1 step(s)) leaves 0 with a learning rate above 0" in msg
    assert "--warmup-ratio 0" in msg and "\n" not in msg
    s = check_schedule_for(cfg, 16)  # two steps: the first warms up at 0, the second trains
    assert (s.steps, s.warmup, s.trained) == (2, 1, 1)
    assert schedule_warning(s) == ("warning: only 1 training step(s) will change the adapter (16 pairs -> 2 "
                                   "optimizer step(s), 1 of warmup, 1 with a learning rate above 0); lower "
                                   "--batch-size or --grad-accum, raise --epochs or --train-items (more failures, "
                                   "more pairs), or set --warmup-ratio 0")
    assert check_schedule(8, 4, 2, 1.0, warmup=0.0).trained == 1
    assert schedule_warning(plan_schedule(200, 4, 2, 1.0, warmup=0.1)) is None  # 25 steps, 24 trained
    with pytest.raises(StageDidNothing, match="at least 3 must have"):
        check_schedule(8, 4, 2, 1.0, warmup=0.0, min_trained=3)
    with pytest.raises(StageDidNothing, match="--max-steps 1 makes 1 step"):
        check_schedule(100, 4, 2, 1.0, max_steps=1, warmup=0.5)


def test_no_failures_or_no_pairs_is_an_error():
    with pytest.raises(StageDidNothing, match="answered all 20 train items correctly"):
        check_failures(0, 20, "smol@Q2_K")
    with pytest.raises(StageDidNothing, match="no train items"):
        check_failures(0, 0)
    check_failures(3, 20)
    with pytest.raises(StageDidNothing, match="no preference pairs from 5 failures"):
        check_pairs(0, 5)
    with pytest.raises(StageDidNothing, match="no preference pairs"):
        check_schedule(0, 4, 2, 1.0)
    check_pairs(1)


def test_adapter_zero_check_reads_the_safetensors(tmp_path):
    a = {"base_model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.randn(4, 16),
         "base_model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(16, 4, dtype=torch.bfloat16)}
    (tmp_path / "zero").mkdir()
    save_file(a, tmp_path / "zero" / "adapter_model.safetensors")
    assert adapter_is_zero(tmp_path / "zero")
    with pytest.raises(StageDidNothing, match="all zero after 1 step"):
        check_adapter_trained(tmp_path / "zero", steps=1)
    moved = dict(a)
    moved["base_model.model.layers.0.self_attn.q_proj.lora_B.weight"] = torch.zeros(16, 4).index_fill_(0,
                                                                                                     torch.tensor([3]),
                                                                                                     1e-6)
    (tmp_path / "moved").mkdir()
    save_file(moved, tmp_path / "moved" / "adapter_model.safetensors")
    assert not adapter_is_zero(tmp_path / "moved")
    check_adapter_trained(tmp_path / "moved")
    diverged = dict(moved)
    diverged["base_model.model.layers.0.self_attn.q_proj.lora_A.weight"] = torch.full((4, 16), float("nan"))
    (tmp_path / "nan").mkdir()
    save_file(diverged, tmp_path / "nan" / "adapter_model.safetensors")
    with pytest.raises(StageDidNothing, match="holds NaN/inf in 1 tensors"):
        check_adapter_trained(tmp_path / "nan")
    (tmp_path / "none").mkdir()
    save_file({"w": torch.ones(2)}, tmp_path / "none" / "adapter_model.safetensors")
    with pytest.raises(StageDidNothing, match="no LoRA B tensors"):
        adapter_is_zero(tmp_path / "none")
    with pytest.raises(StageDidNothing, match="no adapter_model.safetensors"):
        adapter_is_zero(tmp_path)


@pytest.fixture(scope="module")
def tiny_base(smollm2, tmp_path_factory):
    """A tiny random Llama with SmolLM2's real tokenizer, saved as an HF folder."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(smollm2.parent, gguf_file=smollm2.name)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=128, tie_word_embeddings=True))
    out = tmp_path_factory.mktemp("tiny-base")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def dpo_run(base, out, n_pairs: int, warmup: float) -> int:
    """A real trl DPO + peft LoRA run with repair's defaults (batch 4, grad-accum 2, 1 epoch, cosine); returns its
    optimizer steps and leaves the adapter in ``out``."""
    import datasets
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    data = datasets.Dataset.from_dict({
        "prompt": [f"What is {i} + {i}?" for i in range(n_pairs)],
        "chosen": [f" {2 * i}" for i in range(n_pairs)],
        "rejected": [f" {2 * i + 1}" for i in range(n_pairs)],
    })
    args = DPOConfig(output_dir=str(out / "work"), learning_rate=5e-3, num_train_epochs=1.0,
                     per_device_train_batch_size=4, gradient_accumulation_steps=2, warmup_steps=warmup,
                     lr_scheduler_type="cosine", max_length=32, use_cpu=True, save_strategy="no", report_to="none",
                     logging_steps=1, disable_tqdm=True, dataloader_num_workers=0, seed=0)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(base), ref_model=None, args=args,
                         train_dataset=data, processing_class=AutoTokenizer.from_pretrained(base),
                         peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                task_type="CAUSAL_LM"))
    trainer.train()
    trainer.model.save_pretrained(out / "adapter", safe_serialization=True)
    return trainer.state.global_step


@pytest.mark.parametrize("n_pairs, warmup", [(8, 0.1), (16, 0.1), (8, 0.0)])
def test_schedule_predicts_whether_real_dpo_moves_the_adapter(tiny_base, tmp_path, n_pairs, warmup):
    steps = dpo_run(tiny_base, tmp_path, n_pairs, warmup)
    plan = plan_schedule(n_pairs, 4, 2, 1.0, warmup=warmup)
    assert steps == plan.steps
    assert adapter_is_zero(tmp_path / "adapter") == (plan.trained == 0)
    if plan.trained == 0:  # the issue's run: refused before training, and its adapter refused after it
        with pytest.raises(StageDidNothing):
            check_schedule(n_pairs, 4, 2, 1.0, warmup=warmup)
        with pytest.raises(StageDidNothing, match="all zero"):
            check_adapter_trained(tmp_path / "adapter", steps=steps)
    else:
        check_schedule(n_pairs, 4, 2, 1.0, warmup=warmup)
        check_adapter_trained(tmp_path / "adapter", steps=steps)


class _NanGradientAt(TrainerCallback):
    """Fault injection for the test: one real gradient of optimizer step ``step`` set to NaN, as a bad batch in
    bf16 does (the H200 run of 2026-11-30 lost all three trainings this way at step 7)."""

    def __init__(self, step: int):
        self.step = step

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 == self.step:
            next(p for p in model.parameters() if p.requires_grad and p.grad is not None).grad[0, 0] = float("nan")
        return control


@pytest.mark.parametrize("guarded", [True, False])
def test_a_non_finite_gradient_step_is_skipped_not_applied(tiny_base, tmp_path, guarded):
    """Real trl DPO on the tiny model, with one NaN gradient injected at step 2: with the guard the step is skipped
    and the adapter stays finite and trained; without it (trl's default) every LoRA weight becomes NaN."""
    import datasets
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from repair.dpo_trainer import FiniteGradients

    data = datasets.Dataset.from_dict({"prompt": [f"What is {i} + {i}?" for i in range(12)],
                                       "chosen": [f" {2 * i}" for i in range(12)],
                                       "rejected": [f" {2 * i + 1}" for i in range(12)]})
    args = DPOConfig(output_dir=str(tmp_path / "work"), learning_rate=5e-3, num_train_epochs=1.0,
                     per_device_train_batch_size=4, max_length=32, use_cpu=True, save_strategy="no",
                     report_to="none", logging_steps=1, disable_tqdm=True, dataloader_num_workers=0, seed=0)
    logs: list[str] = []
    guard = FiniteGradients(logs.append)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_base), ref_model=None, args=args,
                         train_dataset=data, processing_class=AutoTokenizer.from_pretrained(tiny_base),
                         peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                task_type="CAUSAL_LM"),
                         callbacks=[_NanGradientAt(2)] + ([guard] if guarded else []))
    trainer.train()
    trainer.model.save_pretrained(tmp_path / "adapter", safe_serialization=True)
    assert trainer.state.global_step == 3
    if guarded:
        assert guard.skipped == [2] and logs == ["[dpo step 2] gradients not finite: update skipped"]
        check_adapter_trained(tmp_path / "adapter", steps=3)
    else:
        with pytest.raises(StageDidNothing, match="NaN/inf"):
            check_adapter_trained(tmp_path / "adapter", steps=3)


@pytest.mark.parametrize(("attention", "allowed_inside"), [("sdpa", False), ("eager", True), ("sdpa-cudnn", True)])
def test_sdpa_training_turns_cudnn_attention_off_and_restores_it(attention, allowed_inside):
    """cuDNN's SDPA backward gives NaN query gradients on H100/H200 (torch 2.11-2.13): ``sdpa`` training runs
    with that backend off, and the process-wide setting is given back afterwards, also after an error."""
    from repair.dpo_trainer import attention_backend

    torch.backends.cuda.enable_cudnn_sdp(True)
    with attention_backend(attention) as cudnn_used:
        assert torch.backends.cuda.cudnn_sdp_enabled() is allowed_inside
        assert cudnn_used is (attention == "sdpa-cudnn")
    assert torch.backends.cuda.cudnn_sdp_enabled()
    with pytest.raises(RuntimeError), attention_backend(attention):
        raise RuntimeError("training failed")
    assert torch.backends.cuda.cudnn_sdp_enabled()
