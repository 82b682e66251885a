"""benchmarks/eval_throughput.py's pieces on the CPU: the real llama-batched-bench parsed, layouts validated."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from eval_throughput import batched_bench, main, parse_batched_bench, parse_layout  # noqa: E402


def test_batched_bench_rows_parsed_from_the_real_tool(smollm2, llama_server_bin):
    rows, raw, cmd = batched_bench(smollm2, [1, 2], npp=8, ntg=4, n_gpu_layers=0, threads=1)
    assert sorted(rows) == [1, 2] and "-npl" in cmd
    for b, r in rows.items():
        assert (r["pp"], r["tg"]) == (8, 4) and r["n_kv"] == b * 12
        assert r["s_tg"] == pytest.approx(b * 4 / r["t_tg"], rel=0.02)  # S_TG = generated tokens / T_TG
    with pytest.raises(ValueError, match="no result rows"):
        parse_batched_bench("main: n_kv_max = 4096\nllama_model_load: error")


def test_layouts():
    assert parse_layout("1xP", 64) == (1, 64, False, ())
    assert parse_layout("Rx16", 64) == (4, 16, False, ())
    assert parse_layout("Rx16+bs", 32) == (2, 16, True, ())
    assert parse_layout("Rx8+bs", 64) == (8, 8, True, ())
    assert parse_layout("Rx16@0.1", 64) == (4, 16, False, (0, 1))
    assert parse_layout("1xP+bs@1", 16) == (1, 16, True, (1,))
    for bad in ("Rx24", "2x16", "1xP+xx", "Rx0", "1xP+bs+bs", "", "bogus", "Rx16@0.0", "Rx16@", "Rx16@0,1"):
        with pytest.raises(ValueError, match="layout"):
            parse_layout(bad, 64)


def test_bad_input_is_one_line_before_any_work(tmp_path, capsys):
    for argv, message in ((["--p", "abc"], "--p 'abc': comma-separated"), (["--layouts", ""], "--layouts is empty"),
                          (["--layouts", "3x3"], "layout '3x3'"), (["--model", "no-such-model"], "no-such-model")):
        assert main([*argv, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
        assert not (tmp_path / "out" / "batched-bench.txt").exists()
