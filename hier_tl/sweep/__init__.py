"""sweep: sweep files (`SweepConfig`, strict, with a `smoke:` variant) and everything that talks to Ray Tune: the
search space and algorithms, the trainable around `train.fit`, the recorder that writes the results tables,
the runner that starts and stops Ray, and the live Optuna journal. The only layer that imports Ray (always
inside functions: validating a sweep file never imports it). Imports: core, data, train, results."""
