"""``RepairConfig``: every setting of a DPO repair run, documented and validated in one place.

Headings follow trl's ``DPOConfig``: models / data (mining and pairs) / training / export / proof.
``repair run`` turns its flags into this dataclass; nothing else reads flags.

Models:
    agent (`str`): GGUF of the agent at reference precision (path or catalogue name).
    quant (`str`, default `"Q2_K"`): the degraded quant type the agent runs at and is repaired at.
    hf_model (`str`, default `""`): HF weights of the reference; empty = dequantize ``agent`` with transformers.
    expert (`str`, default `""`): optional larger GGUF that also proposes silver-bullet traces.
Data:
    task, train_items, samples_k, sample_temperature, gold_fallback, max_length, ...
Training:
    beta (0.1), loss_type (sigmoid; `sigmoid,sft` = RPO), loss_weights, learning_rate (5e-5), epochs (1),
    max_steps (-1), batch_size, grad_accum, lora_r, lora_alpha,
    lora_targets, warmup_ratio, max_minutes (5), precision (auto: bf16 on CUDA, fp32 on CPU), attention (sdpa), seed.
Proof:
    eval_items, mmlu_task, mmlu_items, n_bootstrap.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from quantswarm.errors import ConfigError

QUANT_TYPES = ("F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_1", "Q5_0", "Q4_K_M", "Q4_K_S", "Q4_1",
               "Q4_0", "IQ4_XS", "IQ4_NL", "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q2_K", "Q2_K_S")
SOURCES = ("reference", "expert", "gold")
PRECISIONS = ("auto", "bf16", "fp32")
ATTENTIONS = ("sdpa", "eager", "sdpa-cudnn")
LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")  # trl 1.16 DPOConfig
DEFAULT_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


@dataclass
class RepairConfig:
    """Settings of one repair run: mine failures, build pairs, DPO-train a LoRA, export GGUF, prove it."""

    # --- models -------------------------------------------------------------------------------
    agent: str = field(default="", metadata={
        "help": "GGUF of the agent at reference precision (F16/Q8_0/...): path or catalogue name. The degraded "
                "agent is this file requantized to --quant; this file is also the reference the gap is measured to."})
    quant: str = field(default="Q2_K", metadata={
        "help": "Quant type of the degraded agent, and of the repaired GGUF.", "choices": list(QUANT_TYPES)})
    hf_model: str = field(default="", metadata={
        "help": "Folder with HF safetensors weights of the reference. Empty: dequantize the agent GGUF with "
                "transformers (gguf_file=...)."})
    expert: str = field(default="", metadata={
        "help": "Optional larger GGUF asked for a verified-correct trace when the reference fails."})
    out_dir: str = field(default="runs/repair", metadata={
        "help": "Folder for everything the run writes: models, results table, pairs, adapter, report."})
    results: str = field(default="", metadata={
        "help": "Results-table folder the evals append to. Empty: <out_dir>/results."})
    backend: str = field(default="llama-cpp-python", metadata={
        "help": "llama.cpp backend for sampling and evals.", "choices": ["auto", "llama-server", "llama-cpp-python"]})
    n_ctx: int = field(default=2048, metadata={"help": "llama.cpp context size for sampling and evals."})
    parallel: int = field(default=1, metadata={"help": "Concurrent requests per model in sampling and evals."})
    replicas: int = field(default=1, metadata={
        "help": "llama-server processes per model in sampling and evals (each with `parallel` slots)."})
    n_threads: int | None = field(default=None, metadata={
        "help": "CPU threads per llama-server (default: llama.cpp's; set it low when many servers share the CPUs)."})
    train_on: str = field(default="quantized", metadata={
        "help": "Weights the LoRA is trained on: quantized (the degraded GGUF dequantized: the repair corrects the "
                "quantization error in place) | reference (the reference's weights, merged then requantized).",
        "choices": ["quantized", "reference"]})
    deploy: str = field(default="both", metadata={
        "help": "How the repaired agent is deployed and proven: lora (GGUF LoRA over the unchanged quantized GGUF) | "
                "merged (merged and requantized) | both.", "choices": ["lora", "merged", "both"]})
    n_gpu_layers: int = field(default=-1, metadata={
        "help": "Layers llama.cpp offloads to the GPU (-1: all; ignored by a CPU build)."})

    # --- data: mining and preference pairs ----------------------------------------------------
    data_dir: str = field(default="", metadata={
        "help": "Local data folder (gsm8k/, mmlu/ JSONL) for mining and proof. Empty: the loaders' default "
                "(hub, else the small shipped samples: too few items for a real proof)."})
    task: str = field(default="gsm8k_cot_zeroshot", metadata={
        "help": "Generation task whose failures are mined and whose prompt the pairs use."})
    train_items: int = field(default=200, metadata={
        "help": "GSM8K *train* items the degraded agent answers; its failures become pairs."})
    samples_k: int = field(default=4, metadata={
        "help": "Tries per failure to sample a correct trace from the reference (and the expert)."})
    sample_temperature: float = field(default=0.7, metadata={
        "help": "Sampling temperature for those tries (> 0)."})
    gold_fallback: bool = field(default=False, metadata={
        "help": "When no model produced a verified trace, use the gold rationale in the answer format (off-policy: "
                "off by default)."})
    max_tokens: int = field(default=0, metadata={
        "help": "Cap on generated tokens in evals and trace sampling (0: the task's own max_tokens)."})
    max_length: int = field(default=768, metadata={
        "help": "Longest prompt+completion in tokens; longer pairs are dropped (not truncated)."})

    # --- training -----------------------------------------------------------------------------
    beta: float = field(default=0.1, metadata={"help": "DPO beta: strength of the KL tie to the reference."})
    loss_type: str = field(default="sigmoid", metadata={
        "help": "trl DPO loss, or several comma-separated: `sigmoid,sft` adds an NLL term on the chosen trace "
                "(RPO), which keeps off-policy chosen traces (gold rationales) from pulling the policy into "
                "degenerate text.",})
    loss_weights: str = field(default="", metadata={
        "help": "Comma-separated weights, one per --loss-type entry (empty: 1 each)."})
    learning_rate: float = field(default=5e-5, metadata={
        "help": "AdamW learning rate for the LoRA weights (replaces DPOConfig's 1e-6, which is for full fine-tunes)."})
    epochs: float = field(default=1.0, metadata={"help": "Passes over the pairs."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many optimizer steps (-1: epochs decide)."})
    batch_size: int = field(default=4, metadata={"help": "Pairs per device per forward pass."})
    grad_accum: int = field(default=2, metadata={"help": "Forward passes per optimizer step."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch."})
    lora_targets: str = field(default=DEFAULT_TARGETS, metadata={
        "help": "Comma-separated module names that get LoRA (never lm_head: trl cannot train it)."})
    warmup_ratio: float = field(default=0.1, metadata={
        "help": "Share of the steps with a linearly rising learning rate (cosine decay after)."})
    max_minutes: float = field(default=5.0, metadata={
        "help": "Training time budget; training stops cleanly after the step that crosses it."})
    precision: str = field(default="auto", metadata={
        "help": "Training precision: auto = bf16 on CUDA, fp32 on CPU.", "choices": list(PRECISIONS)})
    attention: str = field(default="sdpa", metadata={
        "help": "Attention for training: sdpa = torch's scaled_dot_product_attention with its cuDNN backend turned "
                "off (flash / memory-efficient / math kernels); eager = transformers' matmul + softmax; "
                "sdpa-cudnn = torch's own backend choice, cuDNN included, whose backward returns NaN query "
                "gradients on H100/H200 in torch 2.11-2.13 when a padded batch is 64 tokens past a multiple of "
                "128 (pytorch/pytorch#196678, reported with trl DPO on Qwen2.5 as huggingface/trl#7181)",
        "choices": list(ATTENTIONS)})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "Trade compute for memory (useful for long traces on a small GPU)."})
    seed: int = field(default=0, metadata={"help": "Seed for item sampling, trace sampling and training."})

    # --- proof --------------------------------------------------------------------------------
    eval_items: int = field(default=200, metadata={"help": "Held-out GSM8K *test* items for before/after/reference."})
    mmlu_task: str = field(default="mmlu_logprob", metadata={"help": "MMLU task for the no-regression check."})
    mmlu_items: int = field(default=100, metadata={"help": "MMLU items (0: skip the no-regression check)."})
    n_bootstrap: int = field(default=2000, metadata={"help": "Bootstrap resamples for the paired CI."})

    def __post_init__(self) -> None:
        if not self.agent:
            raise ConfigError("agent is empty; set --agent to a GGUF path or catalogue name")
        self.quant = self.quant.upper()
        if self.quant not in QUANT_TYPES:
            raise ConfigError(f"quant {self.quant!r} is not a llama.cpp quant type; "
                              f"use one of {', '.join(QUANT_TYPES)}")
        if self.hf_model and not (Path(self.hf_model) / "config.json").exists():
            raise ConfigError(f"hf_model {self.hf_model}: no config.json there; point --hf-model at an HF model folder")
        positive = {"train_items": self.train_items, "samples_k": self.samples_k, "max_length": self.max_length,
                    "batch_size": self.batch_size, "grad_accum": self.grad_accum, "lora_r": self.lora_r,
                    "lora_alpha": self.lora_alpha, "n_ctx": self.n_ctx, "parallel": self.parallel,
                    "eval_items": self.eval_items}
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"{key} must be at least 1, not {value}; set --{key.replace('_', '-')}")
        for key, value in {"beta": self.beta, "learning_rate": self.learning_rate, "max_minutes": self.max_minutes,
                           "sample_temperature": self.sample_temperature, "epochs": self.epochs}.items():
            if value <= 0:
                raise ConfigError(f"{key} must be > 0, not {value}; set --{key.replace('_', '-')}")
        if self.max_tokens < 0:
            raise ConfigError(f"max_tokens must be >= 0, not {self.max_tokens}; 0 keeps the task's")
        if self.mmlu_items < 0:
            raise ConfigError(f"mmlu_items must be >= 0, not {self.mmlu_items}; set --mmlu-items 0 to skip MMLU")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), not {self.warmup_ratio}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), not {self.lora_dropout}")
        bad = [t for t in self.loss_types if t not in LOSS_TYPES]
        if bad or not self.loss_types:
            raise ConfigError(f"loss_type {self.loss_type!r}: use one or more of {', '.join(LOSS_TYPES)}")
        try:
            weights = self.weights
        except ValueError:
            raise ConfigError(f"loss_weights {self.loss_weights!r}: comma-separated numbers") from None
        if weights is not None and len(weights) != len(self.loss_types):
            raise ConfigError(f"loss_weights has {len(weights)} values for {len(self.loss_types)} loss types")
        if self.train_on not in ("quantized", "reference"):
            raise ConfigError(f"train_on must be quantized or reference, not {self.train_on!r}")
        if self.deploy not in ("lora", "merged", "both"):
            raise ConfigError(f"deploy must be lora, merged or both, not {self.deploy!r}")
        if self.replicas < 1:
            raise ConfigError(f"replicas must be at least 1, not {self.replicas}")
        if self.attention not in ATTENTIONS:
            raise ConfigError(f"attention must be one of {', '.join(ATTENTIONS)}, not {self.attention!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if "lm_head" in self.targets:
            raise ConfigError("lora_targets includes lm_head, which trl's DPOTrainer cannot train; remove it")
        if not self.results:
            self.results = str(Path(self.out_dir) / "results")

    @property
    def data_root(self) -> str | None:
        """``data_dir`` as the loaders take it (None: their default search)."""
        return self.data_dir or None

    @property
    def loss_types(self) -> list[str]:
        """DPO loss types as a list."""
        return [t.strip() for t in self.loss_type.split(",") if t.strip()]

    @property
    def weights(self) -> list[float] | None:
        """Loss weights as floats (None: trl's default of 1 each)."""
        return [float(w) for w in self.loss_weights.split(",")] if self.loss_weights.strip() else None

    @property
    def targets(self) -> list[str]:
        """LoRA target module names as a list."""
        return [t.strip() for t in self.lora_targets.split(",") if t.strip()]

    @property
    def out(self) -> Path:
        return Path(self.out_dir)


def field_overrides(pairs: list[str]) -> dict:
    """``KEY=VALUE`` strings (a script's ``--set``) as RepairConfig fields, each value converted to the type of the
    field's default (booleans: 1/true/yes); ConfigError for an unknown field or a value of the wrong type."""
    known = {f.name: f for f in fields(RepairConfig)}
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in known:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE with KEY one of {', '.join(known)}")
        kind = type(known[key].default)
        try:
            out[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
        except ValueError:
            raise ConfigError(f"--set {pair!r}: {key} takes a {kind.__name__}") from None
    return out
