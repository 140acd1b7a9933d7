"""hier-tl: hyperparameter sweeps for hierarchical transfer learning with open-set novelty detection.

The package is layered; a layer imports only the layers before it (tests/test_layers.py checks it):

    core      errors, the registry, atomic file writes, typed-config machinery, the code version
    data      the dataset layout and its validation, the decode cache, splits, synthetic data
    train     models, augmentation, `fit`, novelty scores, metrics, checkpoints (no Ray, no results folder)
    results   storage (local or object store), Parquet tables, the trial ledger, reading a results folder
    sweep     sweep files and everything that talks to Ray Tune (the only code that imports Ray)
    analysis  the report, HPO panels and exports;   predict   predictions and refits
    cli       arguments in, one call, output

`hier_tl.train.fit(config, data, report=callback)` is the one trainer; `hier_tl.load_results(uri)` reads a sweep.
"""

from __future__ import annotations

from .core.version import __version__  # noqa: F401


def load_results(uri: str, tables: tuple[str, ...] = ("epochs", "thresholds")):
    """A sweep's results from a local folder or an s3:// / gs:// URI (query parameters such as
    `endpoint_override` kept): `.trials`, `.epochs`, `.thresholds` DataFrames and `.meta` (the sweep file)."""
    from .results.reading import load_results as load

    return load(str(uri), tables)
