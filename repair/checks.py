"""Checks that each repair stage did something: failures were mined, pairs were made, the training schedule has
steps with a learning rate above zero, and the saved adapter moved off its initialisation.

A stage that does nothing must not read as a success: 8 pairs at batch 4 x grad-accum 2 make one optimizer step,
the warmup gives that step learning rate 0, and the LoRA ``B`` matrices (initialised to zero by peft) stay zero,
so the "repaired" model is the degraded one. These functions are pure (arithmetic, or reading the adapter's
safetensors) and mirror how transformers' ``Trainer`` counts steps and shapes the learning rate, so the pipeline
can refuse such a configuration before it loads a model and can refuse such an adapter before it is exported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from quantswarm.errors import QuantswarmError
from repair.repair_config import RepairConfig

ADAPTER_FILE = "adapter_model.safetensors"  # what peft's save_pretrained(safe_serialization=True) writes
LORA_B_MARKERS = ("lora_B", "lora_embedding_B")  # peft's zero-initialised halves of each LoRA pair
FEW_TRAINED_STEPS = 10  # below this the run trains, but too little to expect a measurable repair

_HINT = ("lower --batch-size or --grad-accum, raise --epochs or --train-items (more failures, more pairs), "
         "or set --warmup-ratio 0")


class StageDidNothing(QuantswarmError):
    """A repair stage would do, or did, nothing: no failures, no pairs, no trainable step or an untouched adapter."""


@dataclass(frozen=True)
class Schedule:
    """The optimizer steps a DPO run will take and how many of them can change the weights."""

    pairs: int
    steps: int  # optimizer steps the trainer takes
    warmup: int  # of them with a linearly rising learning rate; the first of these is at learning rate 0
    trained: int  # steps whose learning rate is above 0: only these move the adapter

    def describe(self) -> str:
        return (f"{self.pairs} pairs -> {self.steps} optimizer step(s), {self.warmup} of warmup, "
                f"{self.trained} with a learning rate above 0")


def planned_steps(n_pairs: int, batch_size: int, grad_accum: int, epochs: float, max_steps: int = -1) -> int:
    """Optimizer steps transformers' ``Trainer`` takes on one device: ``max_steps`` when positive, else
    ceil(epochs x ceil(ceil(n_pairs / batch_size) / grad_accum)), at least one per epoch."""
    if max_steps > 0:
        return max_steps
    if n_pairs <= 0:
        return 0
    batches = math.ceil(n_pairs / batch_size)
    per_epoch = max(math.ceil(batches / grad_accum), 1)
    return math.ceil(epochs * per_epoch)


def warmup_steps(steps: int, warmup: float) -> int:
    """Warmup steps as transformers counts them: ``warmup`` >= 1 is a step count, below 1 a share (rounded up)."""
    return int(warmup) if warmup >= 1 else math.ceil(steps * warmup)


def lr_factors(steps: int, warmup: int) -> list[float]:
    """The learning-rate multiplier of each optimizer step under linear warmup then cosine decay (the schedule
    repair's trainer uses): step s < warmup gets s / warmup, so step 0 of any warmup gets 0."""
    out = []
    for s in range(steps):
        if s < warmup:
            out.append(s / max(1, warmup))
            continue
        progress = (s - warmup) / max(1, steps - warmup)
        out.append(max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress))))
    return out


def plan_schedule(n_pairs: int, batch_size: int, grad_accum: int, epochs: float, max_steps: int = -1,
                  warmup: float = 0.0) -> Schedule:
    """The schedule a run on ``n_pairs`` pairs will follow (see :func:`planned_steps`, :func:`lr_factors`)."""
    steps = planned_steps(n_pairs, batch_size, grad_accum, epochs, max_steps)
    w = warmup_steps(steps, warmup)
    return Schedule(n_pairs, steps, w, sum(f > 0 for f in lr_factors(steps, w)))


def check_schedule(n_pairs: int, batch_size: int, grad_accum: int, epochs: float, max_steps: int = -1,
                   warmup: float = 0.0, min_trained: int = 1) -> Schedule:
    """The planned schedule; raises StageDidNothing when fewer than ``min_trained`` steps have a learning rate
    above 0 (e.g. a single step that the warmup runs at 0), saying what to change."""
    check_pairs(n_pairs)
    s = plan_schedule(n_pairs, batch_size, grad_accum, epochs, max_steps, warmup)
    if s.trained >= min_trained:
        return s
    made = (f"{n_pairs} pairs at batch {batch_size} x grad-accum {grad_accum} x {epochs:g} epoch(s) make "
            f"{s.steps} optimizer step(s)" if max_steps <= 0 else f"--max-steps {max_steps} makes {s.steps} step(s)")
    why = (f"and the warmup ({warmup:g} -> {s.warmup} step(s)) leaves {s.trained} with a learning rate above 0"
           if s.warmup else f"but at least {min_trained} must have a learning rate above 0")
    raise StageDidNothing(f"training would change nothing: {made}, {why}; {_HINT}")


def check_schedule_for(cfg: RepairConfig, n_pairs: int, min_trained: int = 1) -> Schedule:
    """:func:`check_schedule` with the batch, accumulation, epochs, max_steps and warmup of a RepairConfig."""
    return check_schedule(n_pairs, cfg.batch_size, cfg.grad_accum, cfg.epochs, cfg.max_steps, cfg.warmup_ratio,
                          min_trained)


def schedule_warning(s: Schedule, few: int = FEW_TRAINED_STEPS) -> str | None:
    """A loud line for a schedule that trains, but too little to expect a measurable repair; None otherwise."""
    if s.trained >= few:
        return None
    return f"warning: only {s.trained} training step(s) will change the adapter ({s.describe()}); {_HINT}"


def check_failures(n_failures: int, n_items: int, agent: str = "the agent") -> None:
    """Raise when mining found no failure to learn from."""
    if n_items <= 0:
        raise StageDidNothing(f"no train items were evaluated for {agent}; raise --train-items")
    if n_failures <= 0:
        raise StageDidNothing(f"{agent} answered all {n_items} train items correctly: nothing to repair; "
                              "raise --train-items or pick a lower --quant")


def check_pairs(n_pairs: int, n_failures: int | None = None) -> None:
    """Raise when no preference pair survived verification, deduplication and the length limit."""
    if n_pairs > 0:
        return
    of = f" from {n_failures} failures" if n_failures is not None else ""
    raise StageDidNothing(f"no preference pairs{of} to train on: no chosen trace was verified, or every pair was "
                          "longer than --max-length; keep --gold-fallback on, raise --samples-k, --max-length or "
                          "--train-items")


def _adapter_file(adapter_dir: str | Path) -> Path:
    path = Path(adapter_dir) / ADAPTER_FILE
    if not path.is_file():
        raise StageDidNothing(f"{adapter_dir}: no {ADAPTER_FILE}; the LoRA adapter was not saved")
    return path


def adapter_is_zero(adapter_dir: str | Path) -> bool:
    """True when every LoRA ``B`` tensor of the saved adapter is all zero: its update B @ A is then zero and
    merging it changes nothing. Raises when the file has no LoRA ``B`` tensor at all."""
    from safetensors import safe_open

    path = _adapter_file(adapter_dir)
    seen = 0
    with safe_open(str(path), framework="pt") as f:
        for name in f.keys():
            if not any(m in name for m in LORA_B_MARKERS):
                continue
            seen += 1
            if f.get_tensor(name).count_nonzero().item():
                return False
    if not seen:
        raise StageDidNothing(f"{path}: no LoRA B tensors ({' or '.join(LORA_B_MARKERS)}); not a peft LoRA adapter")
    return True


def non_finite_tensors(adapter_dir: str | Path) -> list[str]:
    """Names of the saved adapter's tensors that hold NaN or inf."""
    from safetensors import safe_open

    with safe_open(str(_adapter_file(adapter_dir)), framework="pt") as f:
        return [name for name in f.keys() if not f.get_tensor(name).isfinite().all().item()]


def check_adapter_trained(adapter_dir: str | Path, steps: int | None = None) -> None:
    """Raise when the saved adapter holds NaN/inf (training diverged) or is still at its initialisation (all LoRA
    ``B`` tensors zero)."""
    bad = non_finite_tensors(adapter_dir)
    if bad:
        raise StageDidNothing(f"the adapter in {adapter_dir} holds NaN/inf in {len(bad)} tensors ({bad[0]}, ...): "
                              "training diverged; retrain with --precision fp32 or a lower --learning-rate")
    if not adapter_is_zero(adapter_dir):
        return
    after = f" after {steps} step(s)" if steps is not None else ""
    raise StageDidNothing(f"the adapter in {adapter_dir} is all zero{after}: training changed nothing, so the "
                          f"repaired model would equal the degraded one; {_HINT}")
