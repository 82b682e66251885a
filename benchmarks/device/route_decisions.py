"""Every compiled router program's decision on every held-out item of a campaign, written as JSON (a rescue for a
campaign whose router stage could not finish its evaluations within the device time)."""
import glob
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.getcwd())
from router.labels import labels_from_results, split_examples  # noqa: E402
from router.program import load_router  # noqa: E402

run, out = sys.argv[1], sys.argv[2]
data = labels_from_results(f"{run}/results", tau=0.5, cost_file=f"{run}/energy_costs.json")
test = split_examples(data.examples, 0, 0.27, 0.07)["test"]


def decide(manifest: str):
    with load_router(os.path.dirname(manifest)) as r:
        return os.path.basename(os.path.dirname(manifest)), [
            [ex.key, *(lambda d: [d.agent, d.latency_ms, d.parse_failed])(r.route(ex.task))] for ex in test]


with ThreadPoolExecutor(8) as pool:
    got = dict(pool.map(decide, sorted(glob.glob(f"{run}/router/*/manifest.json"))))
json.dump(got, open(out, "w"))
print({k: len(v) for k, v in got.items()})
