"""A run folder (`hier-tl train --out DIR`): the resolved config, a metrics row per epoch (with config, seed
and code version), the validation outputs and a resumable checkpoint, each rewritten atomically per epoch."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from ..core.fileio import atomic_path, write_text
from ..core.yamlio import to_yaml
from ..data.dataset import Dataset
from ..train.train_config import TrainConfig, config_columns
from ..train.trainer import EpochReport, FitResult, fit


def train_to_folder(cfg: TrainConfig, data: Dataset, out: Path | str, log=print) -> FitResult:
    """`hier-tl train`: config.yaml, metrics.parquet (a row per epoch with config, seed and code version),
    val_outputs.pt and checkpoint.pt in `out`, each rewritten atomically after every epoch."""
    out = Path(out)
    write_text(out / "config.yaml", to_yaml(cfg))
    rows = []

    def report(r: EpochReport) -> None:
        m = r.metrics
        rows.append({**config_columns(cfg), **m})
        with atomic_path(out / "metrics.parquet") as tmp:
            pd.DataFrame(rows).to_parquet(tmp, index=False)
        with atomic_path(out / "val_outputs.pt") as tmp:
            torch.save(r.outputs.to_dict(), tmp)
        r.save(out / "checkpoint.pt")
        log(f"epoch {m['epoch']}/{cfg.epochs}  loss {m['train_loss']:.3f}/{m['val_loss']:.3f}  "
            f"super {m['seen_super_acc']:.3f}  sub {m['seen_sub_acc']:.3f}  "
            f"novel {m['novel_super_acc']:.3f}/{m['novel_sub_acc']:.3f}  objective {m['objective']:.3f}  "
            f"{m['images_per_s']:.0f} img/s  {m['epoch_time']:.1f} s")

    result = fit(cfg, data, report)
    log(f"wrote {out}/config.yaml, metrics.parquet, val_outputs.pt, checkpoint.pt")
    return result
