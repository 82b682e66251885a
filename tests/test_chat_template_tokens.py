"""The in-process engine renders chat templates as llama.cpp does: special tokens included, BOS once.

Copies of the real SmolLM2 GGUF with other chat templates and ``add_bos_token`` flags (written with
gguf's own metadata copier) are prompted through the in-process engine and a real llama-server: the
prompt text must equal llama-server's ``/apply-template`` and the token count its ``prompt_tokens``.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import httpx
import pytest
from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

from quantswarm.engine import GenerationParams, open_engine

BOS_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
MSGS = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a colour."}]
IM_START = 1  # SmolLM2's BOS is <|im_start|>, which also opens every chat turn
# variant -> (chat template, add_bos_token, id-1 tokens at the start of llama.cpp's prompt)
VARIANTS = {
    "bos-template": (BOS_TEMPLATE, False, 2),  # the template writes BOS (a token, not ""), then <|im_start|>
    "bos-template-add-bos": (BOS_TEMPLATE, True, 2),  # both would add BOS: llama.cpp cuts the rendered one
    "own-template-add-bos": (None, True, 1),  # the tokenizer adds no BOS before a prompt opening with it
    "no-template": ("", False, 1),  # no template in the file: llama.cpp's ChatML default
}


def variant(src: Path, out: Path, template: str | None, add_bos: bool) -> Path:
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(str(out), arch=reader.get_field("general.architecture").contents())
    new = {"tokenizer.ggml.add_bos_token": MetadataDetails(gguf.GGUFValueType.BOOL, add_bos)}
    remove = ["tokenizer.chat_template"] if template == "" else []
    if template:
        new["tokenizer.chat_template"] = MetadataDetails(gguf.GGUFValueType.STRING, template)
    copy_with_new_metadata(reader, writer, new, remove)
    return out


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def model(request, smollm2, tmp_path_factory):
    template, add_bos, n_leading = VARIANTS[request.param]
    path = variant(smollm2, tmp_path_factory.mktemp("tmpl") / f"{request.param}.gguf", template, add_bos)
    yield path, n_leading
    path.unlink()


def test_prompt_matches_llama_server(model, llama_server_bin):
    path, n_leading = model
    with open_engine(str(path), backend="llama-cpp-python", n_ctx=256) as eng:
        text = eng.render_chat(MSGS)
        tokens = eng.prompt_tokens(MSGS)
        got = eng.chat(MSGS, GenerationParams(max_tokens=1))
    leading = next(i for i, t in enumerate(tokens) if t != IM_START)
    assert leading == n_leading
    assert got.prompt_tokens == len(tokens)
    with open_engine(str(path), backend="llama-server", n_ctx=256, parallel=1) as srv:
        applied = httpx.post(f"{srv.url}/apply-template", json={"messages": MSGS}, timeout=60).json()["prompt"]
        served = srv.chat(MSGS, GenerationParams(max_tokens=1))
    assert text == applied
    assert len(tokens) == served.prompt_tokens
