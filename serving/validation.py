"""The answer-validation hook: when an answer fails it, the gateway re-sends to the next fallback agent."""

from __future__ import annotations

import json
import re

CODE_RE = re.compile(r"```(?:python|py)\s*\n(.*?)(?:```|\Z)", re.S)


def check_answer(text: str, *, role: str, wants_json: bool) -> str | None:
    """Why ``text`` is not acceptable (None if it is): empty, malformed JSON when JSON was asked,
    or (for a ``coder`` agent) a Python code block that does not compile."""
    if not text or not text.strip():
        return "empty answer"
    if wants_json:
        body = text.strip()
        fenced = re.match(r"^```(?:json)?\s*\n(.*?)\n?```$", body, re.S)
        try:
            json.loads(fenced.group(1) if fenced else body)
        except ValueError as exc:
            return f"malformed JSON ({exc.msg} at char {exc.pos})"
    if role == "coder":
        for i, block in enumerate(CODE_RE.findall(text)):
            try:
                compile(block, f"<answer block {i}>", "exec")
            except SyntaxError as exc:
                return f"python block {i} does not compile ({exc.msg}, line {exc.lineno})"
    return None
