"""What one llama-server context allocates besides its weights: the KV cache and the compute buffer.

Both follow llama.cpp's own sizing (the vendored tree ``vendor/llama.cpp/src`` of llama-cpp-python 0.3.36):

KV cache (``llama_kv_cache::llama_kv_cache`` in ``llama-kv-cache.cpp``): per block one K tensor of
``n_head_kv * head_dim_k`` elements and one V tensor of ``n_head_kv * head_dim_v`` elements per cell, of the cache
type (``--cache-type-k/-v``). A quantized type stores blocks of ``block`` elements in ``size`` bytes
(``ggml_row_size``), so an element costs ``size / block`` bytes: q8_0 34/32 = 1.0625, q4_0 18/32 = 0.5625, f16 2,
f32 4 (read from ``gguf.GGML_QUANT_SIZES``). The cell count follows ``llama_context::llama_context``
(``llama-context.cpp``): ``n_ctx`` is padded to a multiple of 256, split over the ``n_seq_max = parallel`` slots
(one KV stream each, ``kv_unified = false`` as llama-server runs it), and each slot's cells padded to 256 again.

Compute buffer (``llama_context::sched_reserve``): ggml-alloc sizes it for the worst-case graph, a prompt ubatch of
``T = min(n_ctx, n_ubatch)`` tokens (rounded up to a multiple of the slots, ``graph_reserve``) against a full KV
stream of ``n_kv`` cells. Its peak is the larger of two phases of one block of the graph (``llm_build_llama`` /
``llm_build_qwen2`` in ``src/models/``, attention from ``llm_graph_context::build_attn`` in ``llama-graph.cpp``),
all float32 (4 bytes) per token:

* feed-forward: ``3 * n_ff`` (up, gate, their SwiGLU product) ``+ 4 * n_embd`` (residual, normed input, FFN input,
  output; ``3 * n_embd`` with a quantized KV cache, measured: one n_embd-wide tensor fewer stays live), plus the KQ
  mask ``n_kv`` wide, which every block reads (f16 with flash attention, f32 without: ``build_attn_inp_kv``);
* attention without flash attention: the scores ``KQ = n_kv * n_head`` per token (the softmax runs in place), the
  f32 mask (``n_kv``), and ``5 * n_embd + 2 * n_embd_k_gqa`` of Q/K/V projections and attention output; with flash
  attention the scores are never materialised (``ggml_flash_attn_ext``), so this phase is below the FFN phase;
* the output head: logits ``n_vocab`` per output row, one row per slot (llama-server sets ``n_outputs_max`` to the
  slot count).

The per-token coefficients (3 n_ff + 4 n_embd; 5 n_embd + 2 n_embd_k_gqa) are the tensors live at the peak; they
match llama-server's logged ``compute buffer size`` on CPU for SmolLM2-135M, Qwen2.5-0.5B and Qwen2.5-1.5B within
+0.1% with flash attention (f16 cache; q8_0/q4_0 within 1.1% on SmolLM2) and within 4% without it (mostly
above: ggml-alloc reuses some of the FFN phase's buffers). ``tests/test_memory_model.py`` checks it against a
real llama-server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

KvCacheType = Literal["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"]
KV_CACHE_TYPES: tuple[str, ...] = get_args(KvCacheType)  # llama-server --cache-type-k/-v "allowed values"
FlashAttn = Literal["on", "off"]
CTX_PAD = 256  # llama_context pads n_ctx and each slot's cells to a multiple of this
F32 = 4


def kv_type_block(name: str) -> tuple[int, int]:
    """(elements per block, bytes per block) of a KV cache type, from ggml's block sizes (``gguf``)."""
    import gguf

    try:
        qtype = gguf.GGMLQuantizationType[name.upper()]
    except KeyError:
        raise ValueError(f"{name!r} is not a ggml type; use one of {', '.join(KV_CACHE_TYPES)}") from None
    return gguf.GGML_QUANT_SIZES[qtype]


def kv_type_bytes(name: str) -> float:
    """Bytes per KV cache element of a llama.cpp cache type (q8_0: 34/32 = 1.0625, f16: 2)."""
    block, size = kv_type_block(name)
    return size / block


def is_quantized(name: str) -> bool:
    """A block-quantized cache type (llama.cpp runs a quantized V cache only with flash attention)."""
    return kv_type_block(name)[0] > 1


def _pad(n: int, to: int = CTX_PAD) -> int:
    return (n + to - 1) // to * to


def kv_cells(n_ctx: int, parallel: int) -> tuple[int, int]:
    """(cells per slot, cells in all) for ``-c n_ctx*parallel -np parallel``, as ``llama_context`` pads them."""
    total = _pad(n_ctx * parallel)
    per_slot = _pad(total // parallel)
    return per_slot, per_slot * parallel


@dataclass(frozen=True)
class GraphDims:
    """A model's sizes that set its compute buffer (from the GGUF header)."""

    n_embd: int
    n_ff: int
    n_head: int
    n_embd_k_gqa: int  # n_head_kv * head_dim_k (largest block)
    n_vocab: int


def compute_tokens(n_ctx: int, parallel: int, n_ubatch: int) -> int:
    """Tokens of the worst-case ubatch ``sched_reserve`` sizes the buffer for (``graph_reserve`` rounding)."""
    t = min(kv_cells(n_ctx, parallel)[1], n_ubatch)
    return (t + parallel - 1) // parallel * parallel


def compute_buffer_bytes(dims: GraphDims, n_ctx: int, parallel: int, n_ubatch: int = 512,
                         flash_attn: bool = True, kv_cache_type: str = "f16") -> int:
    """Bytes of llama.cpp's compute buffer for one context (see the module docstring for the formula's source).

    ``n_ctx`` is per slot, as in the swarm spec; ``parallel`` the slots; ``n_ubatch`` llama.cpp's ``-ub``.
    """
    n_kv = kv_cells(n_ctx, parallel)[0]
    t = compute_tokens(n_ctx, parallel, n_ubatch)
    mask = (2 if flash_attn else F32) * n_kv
    ffn = F32 * (3 * dims.n_ff + (3 if is_quantized(kv_cache_type) else 4) * dims.n_embd) + mask
    attn = 0 if flash_attn else F32 * (n_kv * (dims.n_head + 1) + 5 * dims.n_embd + 2 * dims.n_embd_k_gqa)
    logits = F32 * dims.n_vocab * parallel
    return max(t * max(ffn, attn), logits)
