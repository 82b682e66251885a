"""The swarm spec's pydantic models: the committed JSON schema, one-line errors with key paths, per-agent LoRA."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import jsonschema
import pytest
import typer
import yaml
from typer.testing import CliRunner

from quantswarm.engine.server import free_port
from quantswarm.errors import ConfigError, EngineError
from serving.planner import plan_vram
from serving.swarm_config import config_from_dict, load_swarm, swarm_schema
from serving.workers import Supervisor

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO / "data/swarms/swarm.schema.json"
SPECS = sorted((REPO / "data/swarms").glob("*.yaml"))


def test_committed_schema_is_the_generated_one():
    assert json.loads(SCHEMA.read_text()) == swarm_schema(), "regenerate: quantswarm serve --schema > " + str(SCHEMA)


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_shipped_specs_match_the_schema(spec):
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(
        yaml.safe_load(spec.read_text()))]
    assert not errors, errors


def test_schema_rejects_what_the_loader_rejects():
    validator = jsonschema.Draft202012Validator(swarm_schema())
    assert not validator.is_valid({"agents": {"a": {"model": "a.gguf", "temperature": 1}}})
    assert not validator.is_valid({"agents": {"a": {"model": "a.gguf", "n_ctx": "big"}}})
    assert not validator.is_valid({"vram": {"budget_mib": "lots"}})
    assert validator.is_valid({"agents": {"a": {"model": "a.gguf", "lora": "a-lora.gguf"}},
                               "gateway": {"validate": False}})


def test_every_field_is_described():
    schema = swarm_schema()
    missing = [f"{model}.{name}" for model, body in [("SwarmConfig", schema), *schema["$defs"].items()]
               for name, prop in body.get("properties", {}).items() if not prop.get("description")]
    assert not missing, missing


@pytest.mark.parametrize(
    ("mutate", "line"),
    [
        (lambda d: d["agents"]["coder"].update(n_gpu_layers="x"),
         "x.yaml: agents.coder.n_gpu_layers: expected an integer, got 'x'"),
        (lambda d: d["agents"]["coder"].update(temperature=0.2),
         "x.yaml: agents.coder.temperature: unknown key; allowed: model, role, n_ctx, parallel, n_gpu_layers, gpu, "
         "tensor_split, usage, n_threads, n_ubatch, kv_cache_type, flash_attn, extra_args, lora, quantize_from"),
        (lambda d: d.update(gateway={"validate": "yes"}),
         "x.yaml: gateway.validate: expected true or false, got 'yes'"),
        (lambda d: d.update(vram={"gpus": [1000, "lots"]}),
         "x.yaml: vram.gpus[1]: expected an integer MiB or `auto`, got 'lots'"),
        (lambda d: d["agents"]["coder"].update(extra_args=["--mlock", 3]),
         "x.yaml: agents.coder.extra_args[1]: expected a string, got 3"),
        (lambda d: d.update(bus={"max_deliver": 0}), "x.yaml: bus.max_deliver: must be at least 1, got 0"),
        (lambda d: d.update(version=2), "x.yaml: version: 2 is not supported; write `version: 1`"),
    ],
)
def test_errors_are_one_line_naming_the_key(tmp_path, mutate, line):
    data = {"agents": {"coder": {"model": "coder.gguf", "role": "coder"}}}
    mutate(data)
    with pytest.raises(ConfigError) as err:
        config_from_dict(data, tmp_path / "x.yaml")
    assert str(err.value) == line


def test_empty_sections_take_defaults(tmp_path, smollm2):
    cfg = config_from_dict({"agents": {"a": {"model": str(smollm2)}}, "router": None, "bus": None}, tmp_path / "s.yaml")
    assert cfg.bus.stream == "QUANTSWARM" and cfg.router.kind == "program" and cfg.gateway.validate_answers
    assert cfg.agents["a"].name == "a" and cfg.agents["a"].port == 10001 and cfg.path == str(tmp_path / "s.yaml")


def _fake_server(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in llama-server that writes its command line to a file and exits."""
    argv = tmp_path / "argv.txt"
    script = tmp_path / "llama-server"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {argv}\nexit 1\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script, argv


def test_lora_reaches_the_worker_command(tmp_path, smollm2, monkeypatch):
    adapter = tmp_path / "adapters" / "coder-lora.gguf"
    adapter.parent.mkdir()
    adapter.write_bytes(b"GGUF" + bytes(28))
    data = {"models_dir": str(tmp_path), "vram": {"budget_mib": 0}, "monitor": {"enabled": False},
            "workers": {"start_port": free_port(), "startup_timeout_s": 30, "log_dir": str(tmp_path / "logs")},
            "agents": {"coder": {"model": str(smollm2), "lora": "adapters/coder-lora.gguf", "n_ctx": 64}}}
    spec = tmp_path / "swarm.yaml"
    spec.write_text(yaml.safe_dump(data))
    cfg = load_swarm(spec)
    assert cfg.agents["coder"].lora == str(adapter)
    binary, argv = _fake_server(tmp_path)
    monkeypatch.setenv("LLAMA_SERVER_BIN", str(binary))
    with pytest.raises(EngineError, match="could not start the swarm"):
        Supervisor(cfg, plan_vram(cfg, 0), log=lambda _: None).start()
    args = argv.read_text().splitlines()
    assert args[args.index("--lora") + 1] == str(adapter)
    assert args[args.index("-m") + 1] == str(smollm2)

    (tmp_path / "not-gguf.bin").write_bytes(b"safetensors")
    data["agents"]["coder"]["lora"] = "not-gguf.bin"
    with pytest.raises(ConfigError, match=r"^x\.yaml: agents\.coder\.lora: .*not-gguf\.bin is not a GGUF file"):
        config_from_dict(data, tmp_path / "x.yaml")


def test_serve_schema_flag_prints_the_schema():
    from serving.cli import register

    app = typer.Typer()
    register(app)
    out = CliRunner().invoke(app, ["serve", "--schema"])
    assert out.exit_code == 0 and json.loads(out.stdout) == swarm_schema()
