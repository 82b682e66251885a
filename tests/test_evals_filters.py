"""Answer extraction on tricky strings, and task YAML validation."""

import pytest

from evals.filters import INVALID, get_filter, numbers_equal
from evals.task import load_task
from quantswarm.errors import ConfigError
from quantswarm.loaders import Item

GSM = load_task("gsm8k_cot_zeroshot")
ITEM = Item("gsm8k", "test", "test-0", "q", "1250")


def extract(text: str) -> dict[str, str]:
    return {r.filter: r.extracted for r in GSM.score(text, ITEM)}


@pytest.mark.parametrize(
    "text, strict, flexible",
    [
        ("Step 1... 5 + 3 = 8\n#### 1,250", "1250", "1250"),
        ("So the answer is $1,250.00.", "1250", "1250"),
        ("The final answer is: 1250", "1250", "1250"),
        ("first 12, then 7 more gives 19 apples", INVALID, "19"),
        ("#### -3.50", "-3.5", "-3.5"),
        ("The answer is 000.", "0", "0"),
        ("I cannot solve this.", INVALID, INVALID),
        ("#### 7\nThen again 8", "7", "8"),
    ],
)
def test_gsm8k_filters(text, strict, flexible):
    assert extract(text) == {"strict": strict, "flexible": flexible}


def test_correctness_tolerates_format():
    res = {r.filter: r.correct for r in GSM.score("Total: $1,250\n#### $1,250", ITEM)}
    assert res == {"strict": True, "flexible": True}
    assert numbers_equal("1,250", "1250.0") and not numbers_equal(INVALID, INVALID)


@pytest.mark.parametrize("text, letter", [(" B", "B"), ("The answer is (C).", "C"), ("D. run", "D"),
                                          ("none of them", INVALID), ("a) no", INVALID)])
def test_choice_letter(text, letter):
    assert get_filter("choice_letter").apply(text) == letter


def test_unknown_filter_and_bad_task(tmp_path):
    with pytest.raises(ConfigError, match="Available"):
        get_filter("nope")
    bad = tmp_path / "t.yaml"
    bad.write_text("task: t\ndataset: gsm8k\ndoc_to_text: x\nfilter_list: []\nprimary_filter: strict\nextra: 1\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_task(bad)
    with pytest.raises(ConfigError, match="unknown task"):
        load_task("gsm9k")


def test_mmlu_prompt_is_k_shot_same_subject():
    task = load_task("mmlu_logprob")
    dev = task.load_fewshot_pool(source="shipped")
    item = task.load_items(1, 0, source="shipped")[0]
    msgs = task.messages(item, task.fewshot_items(item, dev))
    assert len(msgs) == 1 + 2 * 5 + 1
    assert item.subject.replace("_", " ") in msgs[0]["content"]
    assert msgs[2]["content"] in "ABCD" and msgs[-1]["content"].endswith("Answer:")
