"""predict: the final predictions CSV from a sweep's chosen trial or a run folder, and `--refit`, which
retrains the chosen configuration on every class first. Imports: core, data, train, results."""
