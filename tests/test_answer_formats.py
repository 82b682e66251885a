"""Answer extraction on number formats that models really write (GSM8K strict and flexible filters)."""

import pytest

from evals.filters import INVALID, canonical_number, get_filter, numbers_equal
from evals.task import load_task
from quantswarm.loaders import Item

TASKS = [load_task("gsm8k_cot_zeroshot"), load_task("gsm8k_cot_fewshot")]


def read(task, text: str, gold: str = "0") -> dict[str, tuple[str, bool]]:
    item = Item("gsm8k", "test", "test-0", "q", gold)
    return {r.filter: (r.extracted, r.correct) for r in task.score(text, item)}


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
@pytest.mark.parametrize(
    "text, gold, strict, flexible",
    [
        # minus signs: U+2212, en dash, fullwidth hyphen-minus; a dash between numbers is not a sign
        ("It ends at \u22123 degrees.\nThe answer is \u22123.", "-3", "-3", "-3"),
        ("The answer is \u20137.", "-7", "-7", "-7"),
        ("#### \uff0d12", "-12", "-12", "-12"),
        ("10-5 = 5 so 10\u20135 is 5", "5", INVALID, "5"),
        # currency, escaped or not, before or after the sign
        ("The final answer is \\$460.", "460", "460", "460"),
        ("The answer is \u20ac1,200.", "1200", "1200", "1200"),
        ("The answer is \u00a35.50", "5.5", "5.5", "5.5"),
        ("She lost money: the answer is -$3.", "-3", "-3", "-3"),
        # markdown emphasis and TeX
        ("The answer is **460**.", "460", "460", "460"),
        ("So the total is $\\boxed{460}$.", "460", "460", "460"),
        ("The answer is \\(1{,}250\\)", "1250", "1250", "1250"),
        ("The answer is 1\\,250 dollars", "1250", "1250", "1250"),
        # thousands separators and decimals
        ("The answer is 1,250,000.", "1250000", "1250000", "1250000"),
        ("The answer is 1\u202f250.", "1250", "1250", "1250"),
        ("#### 460.00", "460", "460", "460"),
        ("Items: 1,2,3 and 4", "4", INVALID, "4"),
        # a model that goes on with a new question after its answer
        ("The answer is 5.\n\nQuestion: Tom has 7 apples. The answer is 7.", "5", "5", "5"),
        ("#### 12\nQ: How many legs do 3 cats have?\nA: 12", "12", "12", "12"),
        # the phrasings Qwen2.5 Instruct writes in zero-shot chain of thought
        ("2 * 9 = 18 apples.\nThe answer is 18.", "18", "18", "18"),
        ("Adding up, the final answer is $18$", "18", "18", "18"),
        ("Total: 9 + 9 = 18\n\n**Answer:** 18", "18", "18", "18"),
        ("### Final Answer\n\\[\n\\boxed{18}\n\\]", "18", "18", "18"),
        ("The final answer is: $\\boxed{-3}$", "-3", "-3", "-3"),
        # an expression after the answer marker is not an answer
        ("Answer: 16 - 3 = 13", "13", INVALID, "13"),
    ],
)
def test_number_formats(task, text, gold, strict, flexible):
    got = read(task, text, gold)
    assert got == {"strict": (strict, strict != INVALID), "flexible": (flexible, True)}


def test_restated_question_at_the_start_is_not_cut():
    cut = get_filter("cut_continuation")
    restated = "\nQuestion: what is 2+2?\n2+2 = 4. The answer is 4."
    assert cut.apply(restated) == restated
    assert cut.apply("The answer is 4.\n\nQuestion 2: what is 3+3?") == "The answer is 4."


@pytest.mark.parametrize("a, b, equal", [("\u22123", "-3", True), ("$460.00", "460", True), ("1,250", "1250.0", True),
                                         ("3", "-3", False), ("0.5", "00.50", True), ("n/a", "n/a", True),
                                         (INVALID, INVALID, False)])
def test_numbers_equal(a, b, equal):
    assert numbers_equal(a, b) is equal


def test_canonical_number():
    assert [canonical_number(x) for x in ("-0", "007", "\u22121,000.50", "none")] == ["0", "7", "-1000.5", None]


def test_task_versions_bumped():
    assert {t.version for t in TASKS} == {"2"}
