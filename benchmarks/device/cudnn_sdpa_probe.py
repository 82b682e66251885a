"""Does this machine's torch give NaN attention gradients through cuDNN's SDPA kernel? (device-only probe)

The reduced reproduction of pytorch/pytorch#196678 (found through trl DPO on Qwen2.5, huggingface/trl#7181): one
head of bf16 attention with a boolean causal mask and every logit near -120 (Qwen2.5's "massive activation" head),
backward through ``F.scaled_dot_product_attention``; sequence lengths 640, 704 and 768 (the bug needs L % 128 == 64),
with torch's default backends and with cuDNN's turned off (what ``repair``'s ``--attention sdpa`` does).
Writes a JSON list of {L, cudnn_sdp, nonfinite_grad_q, nonfinite_grad_k, nonfinite_grad_v} plus versions.

    python benchmarks/device/cudnn_sdpa_probe.py OUT.json
"""

from __future__ import annotations

import json
import math
import sys


def probe(length: int, cudnn: bool) -> dict:
    import torch
    import torch.nn.functional as F

    torch.backends.cuda.enable_cudnn_sdp(cudnn)
    torch.manual_seed(0)
    d = 64
    q = torch.randn(1, 1, length, d, device="cuda", dtype=torch.bfloat16) * 0.1
    k = torch.randn(1, 1, length, d, device="cuda", dtype=torch.bfloat16) * 0.1
    v = torch.randn(1, 1, length, d, device="cuda", dtype=torch.bfloat16)
    q[..., 0], k[..., 0] = 1.0, -120 * math.sqrt(d)
    for t in (q, k, v):
        t.requires_grad_()
    mask = torch.ones(length, length, dtype=torch.bool, device="cuda").tril()[None, None]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out.backward(torch.randn_like(out))
    bad = {f"nonfinite_grad_{n}": int((~torch.isfinite(t.grad)).sum()) for n, t in (("q", q), ("k", k), ("v", v))}
    return {"L": length, "cudnn_sdp": cudnn, **bad}


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("cudnn_sdpa_probe: no CUDA GPU here; the probe is for the device machine", file=sys.stderr)
        return 2
    rows = [probe(n, c) for c in (True, False) for n in (640, 704, 768)]
    result = {"torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
              "gpu": torch.cuda.get_device_name(0), "rows": rows}
    text = json.dumps(result, indent=2)
    print(text)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
