"""Backend-sampling A/B on the device: speed and answer agreement of the same greedy GSM8K items, off vs on."""
import json
import sys
from pathlib import Path

from quantswarm.results import ResultsTable

off, on, out = (Path(a) for a in sys.argv[1:4])
res = {}
for name, d in (("off", off), ("on", on)):
    blocks = [json.loads(x) for x in (d / "blocks.jsonl").read_text().splitlines() if x]
    b = [x for x in blocks if x["task"].startswith("gsm8k")][0]
    rows = ResultsTable(d).read()
    rows = rows[rows["filter"] == "flexible"] if "filter" in rows else rows
    res[name] = {"items": b["items"], "wall_s": b["wall_s"], "tokens": b["completion_tokens"],
                 "tok_per_s": b["completion_tokens"] / b["wall_s"], "accuracy": float(rows["correct"].mean()),
                 "outputs": dict(zip(rows["item_id"], rows["output"], strict=False))}
same = [res["off"]["outputs"][k] == v for k, v in res["on"]["outputs"].items() if k in res["off"]["outputs"]]
summary = {m: {k: v for k, v in r.items() if k != "outputs"} for m, r in res.items()}
summary["speedup_on_vs_off"] = res["on"]["tok_per_s"] / res["off"]["tok_per_s"]
summary["identical_outputs"] = sum(same) / max(len(same), 1)
summary["use_backend_sampling"] = summary["speedup_on_vs_off"] >= 1.3 and summary["identical_outputs"] >= 0.8
out.write_text(json.dumps(summary, indent=2))
print(json.dumps(summary, indent=2))
print("BS=1" if summary["use_backend_sampling"] else "BS=0")
