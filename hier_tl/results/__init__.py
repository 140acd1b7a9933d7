"""results: where a sweep's results live and what they mean: storage on a folder or object storage alike,
append-only Parquet tables, the trial ledger, reading a results folder and the one best-trial rule, run
folders of `hier-tl train`, the sweep lease, signed resume state and the shared-run cache.
Imports: core, data, train."""
