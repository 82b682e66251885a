"""DPO with a LoRA adapter on the reference's HF weights: thin use of trl's ``DPOTrainer`` and peft.

The reference weights come from an HF folder or, for a GGUF-only model, from transformers'
GGUF loader (dequantized to dense weights, saved once as safetensors). The trainer is trl's own;
we add a time budget and a progress log of loss and reward accuracy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import TrainerCallback

from quantswarm.errors import QuantswarmError
from quantswarm.results import package_versions, versions_json
from repair.checks import check_adapter_trained
from repair.pairs import PairSet
from repair.repair_config import RepairConfig


class TrainingError(QuantswarmError):
    """DPO training could not start or finish."""


MAX_SKIPPED_SHARE = 0.25  # more optimizer steps than this share skipped for non-finite gradients: training failed


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def train_dtype(precision: str):
    """bf16 on CUDA and fp32 on CPU for ``auto``; otherwise what was asked (bf16 needs CUDA)."""
    import torch

    if precision == "auto":
        return torch.bfloat16 if cuda_available() else torch.float32
    if precision == "bf16" and not cuda_available():
        raise TrainingError("precision bf16 needs a CUDA GPU here; use --precision auto or fp32 on CPU")
    return torch.bfloat16 if precision == "bf16" else torch.float32


def reference_hf(cfg: RepairConfig, gguf_path: str | Path, log: Callable[[str], None] = print) -> Path:
    """HF folder with the reference weights: ``cfg.hf_model``, else the GGUF dequantized (cached in out_dir)."""
    if cfg.hf_model:
        return Path(cfg.hf_model)
    dest = cfg.out / "reference-hf"
    if (dest / "config.json").exists() and (dest / "model.safetensors").exists():
        return dest
    return dequantize_gguf(gguf_path, dest, train_dtype(cfg.precision), log=log)


def dequantize_gguf(gguf_path: str | Path, dest: str | Path, dtype=None, log: Callable[[str], None] = print) -> Path:
    """Load a GGUF with transformers (weights unpacked to dense tensors) and save it as an HF safetensors folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf_path, dest = Path(gguf_path), Path(dest)
    log(f"dequantizing {gguf_path.name} with transformers' GGUF loader into {dest}")
    kw = {"gguf_file": gguf_path.name}
    try:
        tok = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, **kw, dtype=dtype or torch.float32,
                                                     quantization_config=GgufConfig(dequantize=True))
    except (ValueError, KeyError, OSError) as exc:
        raise TrainingError(f"transformers could not load {gguf_path} ({exc}); pass --hf-model with its HF weights"
                            ) from None
    if getattr(model, "hf_quantizer", None) is not None:  # older loaders keep the quantizer on dense weights
        model.hf_quantizer.remove_quantization_config(model)
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    return dest


@contextmanager
def attention_backend(attention: str) -> Iterator[bool]:
    """Set torch's SDPA backends for ``attention`` (a ``RepairConfig.attention`` value) while training; yields
    whether cuDNN's SDPA kernel may run, and restores the global setting on exit.

    ``sdpa`` turns the cuDNN backend off: its backward returns NaN query gradients on H100/H200 (torch 2.11 to
    2.13) for attention-masked sequences of 64 past a multiple of 128 tokens (pytorch/pytorch#196678; hit by trl
    DPO on Qwen2.5, huggingface/trl#7181), and flash / memory-efficient / math kernels are then chosen instead.
    ``eager`` does not use SDPA; ``sdpa-cudnn`` leaves torch's choice as it is. The setting is process-wide:
    trainings in one process run one after another (two at once in threads would undo each other's)."""
    import torch

    before = torch.backends.cuda.cudnn_sdp_enabled()
    if attention == "sdpa":
        torch.backends.cuda.enable_cudnn_sdp(False)
    try:
        yield torch.backends.cuda.cudnn_sdp_enabled() and attention == "sdpa-cudnn"
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)


class TimeBudget(TrainerCallback):
    """Stop training after the optimizer step that crosses ``max_minutes``."""

    def __init__(self, max_minutes: float):
        self.limit_s = max_minutes * 60
        self.start = 0.0
        self.stopped = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if time.monotonic() - self.start >= self.limit_s and state.global_step < state.max_steps:
            self.stopped = True
            control.should_training_stop = True
        return control


class FiniteGradients(TrainerCallback):
    """Skip an optimizer step whose gradients hold NaN/inf: every gradient is dropped before ``optimizer.step()``
    (torch optimizers leave a parameter without a gradient untouched, moments included), so one bad batch cannot
    turn the adapter into NaN. The dynamic-loss-scaling rule of mixed-precision training (Micikevicius et al.,
    2018, "Mixed Precision Training"; ``torch.amp.GradScaler`` skips such steps the same way) applied to bf16."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log
        self.skipped: list[int] = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        import torch

        grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
        if grads and not torch.stack([g.isfinite().all() for g in grads]).all().item():
            for p in model.parameters():
                p.grad = None
            self.skipped.append(state.global_step + 1)
            self.log(f"[dpo step {state.global_step + 1}] gradients not finite: update skipped")
        return control


class ProgressLog(TrainerCallback):
    """Log each step's loss, gradient norm, reward accuracy and margin; keep the history."""

    KEYS = ("loss", "grad_norm", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected",
            "learning_rate")

    def __init__(self, log: Callable[[str], None]):
        self.log = log
        self.history: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        row = {"step": state.global_step, **{k: float(logs[k]) for k in self.KEYS if logs.get(k) is not None}}
        if len(row) == 1:
            return
        self.history.append(row)
        shown = "  ".join(f"{k.split('/')[-1]} {v:.4g}" for k, v in row.items() if k != "step")
        self.log(f"[dpo step {state.global_step}/{state.max_steps}] {shown}")


@dataclass
class TrainResult:
    """What a DPO run did: steps, time, whether the budget stopped it, the logged history."""

    adapter_dir: str
    base_dir: str
    steps: int
    seconds: float
    stopped_by_budget: bool
    device: str
    dtype: str
    pairs: int
    attention: str = ""  # RepairConfig.attention
    cudnn_sdpa: bool = False  # whether torch's cuDNN attention kernel was allowed while training
    skipped_steps: list[int] = field(default_factory=list)  # optimizer steps dropped for non-finite gradients
    history: list[dict] = field(default_factory=list)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")


def dpo_args(cfg: RepairConfig, output_dir: str | Path):
    """trl ``DPOConfig`` from the repair settings (bf16 on CUDA, fp32 on CPU, no checkpoints, log every step)."""
    import torch
    from trl import DPOConfig

    bf16 = train_dtype(cfg.precision) == torch.bfloat16
    return DPOConfig(
        output_dir=str(output_dir), beta=cfg.beta, learning_rate=cfg.learning_rate, num_train_epochs=cfg.epochs,
        loss_type=cfg.loss_types if len(cfg.loss_types) > 1 else cfg.loss_types[0], loss_weights=cfg.weights,
        max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, max_length=cfg.max_length, bf16=bf16, fp16=False,
        use_cpu=not cuda_available(), gradient_checkpointing=cfg.gradient_checkpointing, seed=cfg.seed,
        logging_steps=1, save_strategy="no", report_to="none", warmup_steps=cfg.warmup_ratio,
        logging_nan_inf_filter=False,  # a NaN loss is logged as NaN, not replaced by the window's mean
        lr_scheduler_type="cosine",
        disable_tqdm=True, dataloader_num_workers=0,
    )


def lora_config(cfg: RepairConfig):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.targets, bias="none", task_type="CAUSAL_LM")


def train_dpo(cfg: RepairConfig, pairs: PairSet, base_dir: str | Path, adapter_dir: str | Path,
              log: Callable[[str], None] = print) -> TrainResult:
    """Train a LoRA adapter with DPO on ``pairs`` over the HF model in ``base_dir``; save it (safetensors)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOTrainer

    if not pairs.pairs:
        raise TrainingError("no preference pairs to train on; mine more training items (--train-items)")
    dtype = train_dtype(cfg.precision)
    device = "cuda" if cuda_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype,
                                                 attn_implementation=cfg.attention.removesuffix("-cudnn"))
    data = pairs.to_dataset().select_columns(["prompt", "chosen", "rejected"])
    budget, progress, finite = TimeBudget(cfg.max_minutes), ProgressLog(log), FiniteGradients(log)
    args = dpo_args(cfg, Path(adapter_dir).parent / "dpo-work")
    trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=data, processing_class=tok,
                         peft_config=lora_config(cfg), callbacks=[budget, progress, finite])
    log(f"DPO: {len(data)} pairs, {device} {str(dtype).removeprefix('torch.')}, {cfg.attention} attention, "
        f"LoRA r={cfg.lora_r} on {','.join(cfg.targets)}, budget {cfg.max_minutes:g} min")
    t0 = time.monotonic()
    with attention_backend(cfg.attention) as cudnn_sdpa:
        trainer.train()
    seconds = time.monotonic() - t0
    steps = trainer.state.global_step
    if finite.skipped:
        log(f"{len(finite.skipped)} of {steps} optimizer steps skipped for non-finite gradients: {finite.skipped}")
    if len(finite.skipped) > MAX_SKIPPED_SHARE * max(1, steps):
        raise TrainingError(f"{len(finite.skipped)} of {steps} optimizer steps had non-finite gradients (steps "
                            f"{finite.skipped[:8]}); nothing saved (try --precision fp32 or a lower --learning-rate)")
    adapter_dir = Path(adapter_dir)
    trainer.model.save_pretrained(adapter_dir, safe_serialization=True)
    check_adapter_trained(adapter_dir, steps=trainer.state.global_step)  # an all-zero adapter is a failed repair
    tok.save_pretrained(adapter_dir)
    result = TrainResult(str(adapter_dir), str(base_dir), trainer.state.global_step, round(seconds, 2),
                         budget.stopped, device, str(dtype).removeprefix("torch."), len(data), cfg.attention,
                         cudnn_sdpa, finite.skipped, progress.history)
    meta = {"config": asdict(cfg), "train": asdict(result), "versions": json.loads(versions_json(
        package_versions(("peft", "transformers", "torch", "datasets"))))}
    (adapter_dir / "repair_meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    del trainer, model
    if device == "cuda":
        torch.cuda.empty_cache()
    return result
