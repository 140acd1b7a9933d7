"""analysis: what a finished (or running) sweep says: the comparison table and report (Markdown, HTML and
plots), Optuna's HPO panels, the seen-vs-novel Pareto view, leaderboard scoring, validation set beside
figures measured on unseen images (`unseen`) and the MLflow export.
Imports: core, data, train, results, sweep (never Ray itself)."""
