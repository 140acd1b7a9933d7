"""train.folds: one epoch's metrics and threshold rows merged over rotating-validation folds."""
import math

import pytest

from hier_tl.train import folds


def test_fold_metrics_are_means_with_spread_summed_times_and_fold_zero_thresholds():
    per_fold = [{"epoch": 2, "objective": 0.5, "novel_super_acc": 0.2, "train_time": 1.0, "threshold_super": 0.3},
             {"epoch": 2, "objective": 0.7, "novel_super_acc": math.nan, "train_time": 2.0, "threshold_super": 0.9}]
    m = folds.combine_folds(per_fold)
    assert m["objective"] == pytest.approx(0.6) and m["objective_std"] == pytest.approx(0.1)
    assert m["novel_super_acc"] == pytest.approx(0.2)  # a fold without novel images does not count
    assert m["train_time"] == 3.0 and m["threshold_super"] == 0.3 and m["epoch"] == 2
    assert folds.combine_folds(per_fold[:1]) is per_fold[0]
    breeds = folds.combine_folds([{"new_breed_as_novel_super": 0.1}, {"new_breed_as_novel_super": 0.3}])
    assert breeds == {"new_breed_as_novel_super": pytest.approx(0.2), "new_breed_as_novel_super_std": pytest.approx(0.1)}
    rows = folds.mean_rows([[{"score": "msp", "threshold": "best", "objective": 0.4, "threshold_super": 0.1}],
                              [{"score": "msp", "threshold": "best", "objective": 0.8, "threshold_super": 0.7}]])
    assert rows == [{"score": "msp", "threshold": "best", "objective": pytest.approx(0.6), "threshold_super": 0.1}]
