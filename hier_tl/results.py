"""Result rows and Parquet files written atomically (a temporary file, then a rename).

Every row carries its resolved config (one column per key), seed and code version, so a table read
on its own says what produced it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import code_version
from .config import TrainConfig


def config_columns(cfg: TrainConfig | dict) -> dict[str, Any]:
    """Config keys as columns; `threshold` (number or text) is stored as text so the column has one type."""
    d = cfg.to_dict() if isinstance(cfg, TrainConfig) else dict(cfg)
    d["threshold"] = str(d["threshold"])
    return {**d, **code_version()}


def write_parquet(rows: list[dict] | pd.DataFrame, path: Path | str, filesystem=None) -> None:
    """Write atomically: readers never see a half-written file, even if the writer is killed."""
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    table = pa.Table.from_pandas(df, preserve_index=False)
    path = str(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    if filesystem is None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    else:  # object stores: a single PUT is already atomic
        pq.write_table(table, path, filesystem=filesystem)


def read_parquet(path: Path | str, filesystem=None) -> pd.DataFrame:
    return pq.read_table(str(path), filesystem=filesystem).to_pandas()
