"""The generated easy family is deterministic for a seed and scored by code; the code sandbox."""

from __future__ import annotations

from evals.easy import generate
from evals.sandbox import humaneval_program, run_program
from evals.task import load_task
from quantswarm.loaders import Item, load


def test_easy_generator_is_deterministic_and_checked_by_code():
    assert generate(40, seed=3) == generate(40, seed=3)
    assert generate(40, seed=3) != generate(40, seed=4)
    for row in generate(40, seed=3):
        q, a = row["question"], row["answer"]
        if row["kind"] == "arithmetic":
            x, op, y = q.removeprefix("What is ").split("?")[0].split()
            assert int(a) == eval(f"{int(x)} {op} {int(y)}")  # noqa: S307 - two ints and an operator
        elif row["kind"] == "reverse":
            assert a == q.split("'")[1][::-1]
        elif row["kind"] == "uppercase":
            assert a == q.split("'")[1].upper()


def test_shipped_easy_split_is_the_seeded_generation():
    items = load("easy", "test")
    assert [it.gold for it in items] == [r["answer"] for r in generate(400, seed=2)]
    task = load_task("easy_oneshot")
    it = next(i for i in items if i.subject == "reverse")
    assert task.score(f"The reversed word is {it.gold}.", it)[0].correct
    assert not task.score(f"The reversed word is {it.gold.upper()}.", it)[0].correct or it.gold == it.gold.upper()
    num = next(i for i in items if i.subject == "unit_conversion")
    assert task.score(f"There are {int(num.gold):,} of them", num)[0].correct


PROMPT = 'def add(a, b):\n    """Add two numbers."""\n'
TEST = "def check(f):\n    assert f(2, 3) == 5\n"


def test_sandbox_passes_fails_and_times_out():
    ok = run_program(humaneval_program(PROMPT, "```python\ndef add(a, b):\n    return a + b\n```", TEST, "add"))
    assert ok.passed and ok.status == "passed"
    wrong = run_program(humaneval_program(PROMPT, "    return a - b\n", TEST, "add"))
    assert not wrong.passed and wrong.status == "failed" and "AssertionError" in wrong.detail
    hang = run_program(humaneval_program(PROMPT, "    while True:\n        pass\n", TEST, "add"), timeout_s=2)
    assert hang.status == "timeout"
    net = run_program("import socket\nsocket.socket()\n")
    assert not net.passed and "network disabled" in net.detail


def test_code_task_needs_explicit_opt_in():
    import pytest

    from quantswarm.errors import ConfigError

    task = load_task("humaneval_pass1")
    item = Item("humaneval", "test", "t/0", PROMPT, "", extra={"test": TEST, "entry_point": "add"})
    with pytest.raises(ConfigError, match="executes model-written code"):
        task.score("    return a + b\n", item)
    assert task.score("    return a + b\n", item, allow_code_execution=True)[0].correct


def test_an_empty_code_answer_scores_invalid_without_running_anything():
    """An engine error row is scored as an empty answer: no code to run, so no opt-in is needed to score it."""
    task = load_task("humaneval_pass1")
    item = Item("humaneval", "test", "t/0", PROMPT, "", extra={"test": TEST, "entry_point": "add"})
    (r,) = task.score("", item)
    assert not r.correct and r.extracted == "[invalid]"
