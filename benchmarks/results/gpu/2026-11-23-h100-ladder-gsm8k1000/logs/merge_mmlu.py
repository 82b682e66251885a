"""Append the first campaign's MMLU rows (committed without the prompt/versions columns) to a results table."""
import sys
from pathlib import Path

import pandas as pd

from quantswarm.results import COLUMNS, ResultsTable

old = pd.read_parquet("benchmarks/results/gpu/2026-11-23-h100-quant-ladder/rows.parquet")
old = old[old["task"] == "mmlu_logprob"].copy()
for col in COLUMNS:
    if col not in old:
        old[col] = "" if col == "prompt" else "{}"
ResultsTable(Path(sys.argv[1])).append(old[COLUMNS])
print("merged", len(old), "MMLU rows of the first campaign")
