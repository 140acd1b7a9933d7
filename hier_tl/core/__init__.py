"""core: what every layer uses and nothing of hier-tl's own: the error types and their exit codes, the name
registry, atomic file writes, the typed-config machinery (YAML, `--set`, the threshold grammar), numbers as
tables hold them, and the code version. Imports: the standard library and PyYAML only."""
