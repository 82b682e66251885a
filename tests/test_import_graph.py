"""Imports flow one way: core at the bottom; evals and router on core; repair on evals; serving on router and evals
(the routed bench workload sends and scores the eval tasks)."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ALLOWED = {
    "quantswarm": {"quantswarm"},
    "evals": {"quantswarm", "evals"},
    "router": {"quantswarm", "router"},
    "repair": {"quantswarm", "evals", "repair"},
    "serving": {"quantswarm", "router", "evals", "serving"},
    "quantswarm_demo": {"quantswarm", "evals", "router", "serving", "quantswarm_demo"},  # drives all jobs
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):  # importlib.import_module("evals.cli") counts too
            out.add(node.args[0].value.split(".")[0])
    return out


def test_import_graph():
    bad = []
    for pkg, allowed in ALLOWED.items():
        for f in (REPO / pkg).rglob("*.py"):
            for mod in _imports(f) & set(ALLOWED):
                if mod not in allowed:
                    bad.append(f"{f.relative_to(REPO)} imports {mod}")
    assert not bad, "sideways imports: " + "; ".join(bad)
