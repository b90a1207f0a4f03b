"""Content fingerprints of datasets and of builder parameters."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa
from datasets import Dataset, DatasetDict


def params_fingerprint(params: dict[str, Any]) -> str:
    """Short stable hash of JSON-serialisable builder parameters (keys the on-disk cache)."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]


def dataset_fingerprint(dataset: Dataset | DatasetDict) -> str:
    """SHA-256 of the Arrow IPC serialisation of every split (same content -> same fingerprint)."""
    digest = hashlib.sha256()
    splits = dataset.items() if isinstance(dataset, DatasetDict) else [("", dataset)]
    for name, split in sorted(splits):
        digest.update(name.encode())
        sink = pa.BufferOutputStream()
        table = split.data.table
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        digest.update(sink.getvalue().to_pybytes())
    return digest.hexdigest()
