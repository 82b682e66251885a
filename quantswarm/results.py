"""The results table: one schema for every per-item row that any job writes.

A table is a directory of Parquet part files (``part-*.parquet``); appending writes a new part,
so writers never rewrite what is there and an interrupted run loses at most its last batch.
A single ``.parquet`` file is also accepted for reading. Every summary (accuracy, CI, cost,
router labels, repair pairs) is derived from these rows, never stored beside them.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from quantswarm.errors import ResultsSchemaError

SCHEMA_VERSION = 2

SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),  # one eval/bench invocation
        ("source", pa.string()),  # eval | bench | repair
        ("agent", pa.string()),  # agent name, e.g. "smollm2@Q4_K_M"
        ("model_file", pa.string()),  # file name of the GGUF (or HF dir)
        ("model_sha", pa.string()),  # first 16 hex of the file's sha256
        ("quant", pa.string()),  # GGUF file type, e.g. Q4_K_M, F16
        ("reference", pa.string()),  # how the model was made, e.g. "F16 from Q4_1" ("" if original)
        ("backend", pa.string()),  # llama-cpp-python | llama-server
        ("task", pa.string()),  # task name, e.g. gsm8k_cot_zeroshot
        ("task_version", pa.string()),
        ("dataset", pa.string()),  # gsm8k | mmlu | humaneval | bench profile
        ("split", pa.string()),  # train | test | dev
        ("item_id", pa.string()),  # stable id within (dataset, split)
        ("subject", pa.string()),  # MMLU subject or category ("" if none)
        ("filter", pa.string()),  # answer-extraction filter name
        ("primary", pa.bool_()),  # the task's headline filter
        ("prompt_hash", pa.string()),
        ("prompt", pa.string()),
        ("output", pa.string()),
        ("extracted", pa.string()),
        ("gold", pa.string()),
        ("correct", pa.bool_()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("latency_ms", pa.float64()),
        ("joules", pa.float64()),  # null when no energy meter
        ("seed", pa.int64()),
        ("temperature", pa.float64()),  # sampling temperature of the answer (0 = greedy)
        ("max_tokens", pa.int64()),  # cap on generated tokens the answer ran under
        ("n_ctx", pa.int64()),  # context tokens per slot the answer ran under
        ("finish_reason", pa.string()),  # stop | length | error | logprob ("" when unknown)
        ("choice_logprobs", pa.map_(pa.string(), pa.float64())),  # per-choice log-probabilities (logprob tasks)
        ("data_source", pa.string()),  # where the item came from: local file path, hub, shipped sample
        ("route", pa.string()),  # served requests: how the agent was chosen (named | router | default | router-error
        #                          | router-unknown); "" for evals
        ("device", pa.string()),  # e.g. "cpu (2 cores)" or "NVIDIA H100 80GB HBM3"
        ("versions", pa.string()),  # JSON of producing versions (quantswarm, llama-cpp-python, ...)
        ("timestamp", pa.timestamp("us", tz="UTC")),
    ]
)
COLUMNS = [f.name for f in SCHEMA]
KEY = ["run_id", "agent", "task", "item_id", "filter"]
# what makes two answers the same answer: a rerun with the same values skips the item (resume)
IDENTITY = ("agent", "model_sha", "task", "task_version", "item_id", "seed", "temperature", "max_tokens", "n_ctx")
# columns added after schema 1: parts written before them read back with these values
ADDED = {"temperature": 0.0, "max_tokens": 0, "n_ctx": 0, "finish_reason": "", "choice_logprobs": None,
         "data_source": "", "route": ""}


@dataclass
class ResultRow:
    """One per-item result (one answer-extraction filter applied to one output)."""

    run_id: str
    agent: str
    model_file: str
    model_sha: str
    quant: str
    task: str
    dataset: str
    split: str
    item_id: str
    output: str
    extracted: str
    gold: str
    correct: bool
    source: str = "eval"
    reference: str = ""
    backend: str = ""
    task_version: str = ""
    subject: str = ""
    filter: str = "none"
    primary: bool = True
    prompt_hash: str = ""
    prompt: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    joules: float | None = None
    seed: int = 0
    temperature: float = 0.0
    max_tokens: int = 0
    n_ctx: int = 0
    finish_reason: str = ""
    choice_logprobs: dict[str, float] | None = None
    data_source: str = ""
    route: str = ""
    device: str = ""
    versions: str = "{}"
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))


assert set(f.name for f in fields(ResultRow)) == set(COLUMNS), "ResultRow and SCHEMA disagree"


def prompt_hash(text: str) -> str:
    """Short stable hash of a prompt, to check two runs asked the same thing."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def new_run_id(prefix: str = "run") -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def rows_to_frame(rows: Iterable[ResultRow]) -> pd.DataFrame:
    frame = pd.DataFrame([asdict(r) for r in rows], columns=COLUMNS)
    return _coerce(frame)


def _coerce(frame: pd.DataFrame) -> pd.DataFrame:
    table = pa.Table.from_pandas(frame[COLUMNS], schema=SCHEMA, preserve_index=False)
    return table.to_pandas()


class ResultsTable:
    """A results table on disk: a directory of Parquet parts (or one Parquet file, read-only)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, rows: Iterable[ResultRow] | pd.DataFrame) -> int:
        """Write rows as a new part file; returns how many rows were written."""
        frame = rows if isinstance(rows, pd.DataFrame) else rows_to_frame(rows)
        if frame.empty:
            return 0
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise ResultsSchemaError(f"rows lack columns {missing}; build them with ResultRow")
        if self.path.suffix == ".parquet":
            raise ResultsSchemaError(
                f"{self.path} is a single Parquet file; append to a results directory instead"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(frame[COLUMNS], schema=SCHEMA, preserve_index=False)
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"  # sorts in write order
        tmp = self.path / f".{name}.tmp"
        pq.write_table(table, tmp, metadata_collector=None)
        tmp.rename(self.path / name)
        return len(frame)

    def parts(self) -> list[Path]:
        if self.path.is_file():
            return [self.path]
        if not self.path.is_dir():
            return []
        return sorted(self.path.glob("part-*.parquet"))

    def read(self, **equals: str) -> pd.DataFrame:
        """All rows (validated), optionally only those whose columns equal the given values."""
        if not self.path.exists():
            raise ResultsSchemaError(f"no results table at {self.path}")
        frames = [read_part(p) for p in self.parts()]
        frame = pd.concat(frames, ignore_index=True) if frames else _coerce(pd.DataFrame(columns=COLUMNS))
        for col, value in equals.items():
            if col not in COLUMNS:
                raise ResultsSchemaError(f"unknown results column {col!r}; columns: {', '.join(COLUMNS)}")
            frame = frame[frame[col] == value]
        return frame.reset_index(drop=True)

    def done_keys(self, columns: tuple[str, ...] = IDENTITY, **equals: str) -> set[tuple]:
        """Distinct values of ``columns`` among answered rows (optionally filtered), for resuming.

        Rows of an answer that errored (``finish_reason == "error"``) do not count: a rerun retries them.
        """
        if not self.parts():
            return set()
        frame = self.read(**equals)
        frame = frame[(frame["finish_reason"] != "error") & ~frame["output"].str.startswith("[error]")]
        return set(frame[list(columns)].itertuples(index=False, name=None))


def read_part(path: Path) -> pd.DataFrame:
    """Read one Parquet file and check it against the schema, with a clear error if it is off."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ResultsSchemaError(f"{path}: not a readable Parquet file ({exc})") from None
    missing = [c for c in COLUMNS if c not in table.column_names and c not in ADDED]
    if missing:
        raise ResultsSchemaError(f"{path}: not a quantswarm results file, missing columns {missing}")
    for name, value in ADDED.items():  # a part written before these columns existed
        if name not in table.column_names:
            table = table.append_column(SCHEMA.field(name), pa.array([value] * table.num_rows,
                                                                     type=SCHEMA.field(name).type))
    for name in COLUMNS:
        want, got = SCHEMA.field(name).type, table.schema.field(name).type
        if want != got and not pa.types.is_null(got) and not (_stringy(want) and _stringy(got)):
            raise ResultsSchemaError(f"{path}: column {name!r} has type {got}, expected {want}")
    return table.select(COLUMNS).cast(SCHEMA).to_pandas()


def _stringy(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def package_versions(dists: Iterable[str], missing: str | None = None) -> dict[str, str]:
    """Installed version of each distribution; one that is not installed is left out, or given as ``missing``."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for dist in dists:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            if missing is not None:
                out[dist] = missing
    return out


def versions_json(extra: dict[str, str] | None = None) -> str:
    """JSON of the versions that produced a score (quantswarm, llama-cpp-python, ...)."""
    out: dict[str, str] = {"schema": str(SCHEMA_VERSION),
                           **package_versions(("quantswarm", "llama-cpp-python", "gguf", "dspy", "trl"))}
    out.update(extra or {})
    return json.dumps(out, sort_keys=True)
