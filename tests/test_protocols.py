"""results.protocols: trials are ranked only against trials validated the same way."""

import pandas as pd
import pytest

from hier_tl.analysis.report import comparison_table, format_table
from hier_tl.core.errors import SelectionError
from hier_tl.results.protocols import (
    decision,
    listing,
    protocol_column,
    protocols,
    within,
)
from hier_tl.results.reading import best_trial
from hier_tl.train.train_config import TrainConfig, config_columns, protocol_label

SUB = {"holdout_subclasses": 3}  # 3 terms in the objective
BOTH = {"holdout_subclasses": 3, "holdout_superclasses": 1}  # 4 terms: a novel superclass is harder


def trials() -> pd.DataFrame:
    """Protocol BOTH's best objective (0.60) is lower than protocol SUB's worst (0.70): a ranking that mixes
    protocols always picks SUB, whatever is asked."""
    rows = []
    for tid, proto, obj, depth in (("s1", SUB, 0.70, "full"), ("s2", SUB, 0.90, "partial"),
                                   ("b1", BOTH, 0.60, "full"), ("b2", BOTH, 0.40, "partial")):
        cfg = TrainConfig(backbone="cnn_tiny", depth=depth, **proto)
        rows.append({"trial_id": tid, "status": "completed", "epochs_run": 2, "compute_s": 1.0,
                     "final_objective": obj, **config_columns(cfg)})
    return pd.DataFrame(rows)


def test_labels_say_how_a_trial_was_validated():
    assert protocol_label(TrainConfig()) == "closed set"
    assert protocol_label(TrainConfig(**BOTH, folds=3)) == "3 sub + 1 super held out, 3 folds"
    assert protocol_label(TrainConfig(val_fraction=0.2, split_seed=4)) == "closed set, val 0.2, split seed 4"
    assert protocol_label({"holdout_superclasses": 1}) == "1 super held out"  # a results row, defaults filled in


def test_tables_written_before_the_column_existed_get_their_protocol_from_the_config():
    t = trials()
    assert list(protocol_column(t.drop(columns="protocol"))) == list(t.protocol)
    assert protocols(t) == ["3 sub held out", "3 sub + 1 super held out"]
    assert listing(t) == "1 = '3 sub held out' (2 trials); 2 = '3 sub + 1 super held out' (2 trials)"


@pytest.mark.parametrize("meta, asked, winner", [
    ({"decide_on": BOTH}, None, "b1"),  # the sweep file names the protocol that decides
    ({"decide_on": BOTH, "base": {"folds": 1}}, None, "b1"),
    ({}, "2", "b1"),  # --protocol by number...
    ({}, "3 sub + 1 super held out", "b1"),  # ...or by label
    ({"decide_on": BOTH}, "2", "s2"),  # --protocol wins over decide_on (numbered with the deciding one first)
])
def test_the_best_trial_is_the_best_of_the_deciding_protocol_not_of_the_sweep(meta, asked, winner):
    t = trials()
    assert best_trial(within(t, decision(t, meta, asked)), "objective", "max")["trial_id"] == winner


@pytest.mark.parametrize("meta, asked, needle", [
    ({}, None, "2 protocols, whose objectives are not comparable: choose one with --protocol N"),
    ({}, "7", "--protocol '7' is not a protocol of this sweep; its protocols: 1 = '3 sub held out'"),
    ({"decide_on": {"holdout_subclasses": 9}}, None, "decide_on names protocol '9 sub held out', which no trial"),
])
def test_an_ambiguous_or_unknown_protocol_is_one_line_listing_the_choices(meta, asked, needle):
    with pytest.raises(SelectionError, match=needle.replace("(", r"\(").replace(")", r"\)")) as e:
        decision(trials(), meta, asked)
    assert "\n" not in str(e.value)


def test_the_comparison_table_has_one_block_per_protocol_ranked_inside_it():
    table = comparison_table(trials(), decide="3 sub + 1 super held out")
    assert list(table.P) == ["P1", "P1", "P2", "P2"]  # the deciding protocol first
    assert list(table["best trial"]) == ["b1", "b2", "s2", "s1"]  # ranked within each block, not across
    assert list(table.decides) == [True, True, False, False]
    text = format_table(table)
    assert text.index("P1: validation protocol '3 sub + 1 super held out' (decides") < text.index("P2: validation")


@pytest.fixture(scope="module")
def two_protocols(tmp_path_factory):
    """A real sweep over two protocols, then edited so that the protocol that decides has the LOWER best
    objective: (results folder, dataset folder, the deciding protocol's best trial, the other's best trial)."""
    import yaml

    from hier_tl.cli import main
    from hier_tl.data.synthetic import SynthSpec, load_source

    tmp = tmp_path_factory.mktemp("protocols")
    synth = {"seed": 3, "subs_per_super": 2, "per_class": 12, "test_per_class": 2, "size": 32}
    spec = {"name": "p", "data": "synthetic", "synthetic": synth, "storage": str(tmp / "results"),
            "base": {"backbone": "cnn_tiny", "epochs": 1, "batch_size": 16, "threshold": "tpr:0.9"},
            "space": {"holdout_subclasses+depth": {"grid": [[0, "full"], [0, "partial"], [1, "full"], [1, "partial"]]}},
            "search": {"algo": "grid"}, "scheduler": {"kind": "none"}, "resources": {"cpu": 1},
            "novelty": {"scores": ["msp"], "thresholds": [0.5, "tpr:0.9"]}}
    (tmp / "s.yaml").write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(tmp / "s.yaml")]) == 0
    results = tmp / "results" / "p"
    t = pd.read_parquet(results / "trials.parquet")
    sub = t.protocol == "1 sub held out"
    t.loc[sub, "final_objective"] = [0.30, 0.20]  # the deciding protocol: lower than every other trial
    t.loc[~sub, "final_objective"] = [0.80, 0.90]
    t.to_parquet(results / "trials.parquet")
    data = load_source("synthetic", SynthSpec(**synth)).root
    return results, data, t[sub].trial_id.iloc[0], t[~sub].trial_id.iloc[1]


def _decide_on_holdout(results):
    import yaml
    meta = yaml.safe_load((results / "sweep.yaml").read_text())
    (results / "sweep.yaml").write_text(yaml.safe_dump({**meta, "decide_on": {"holdout_subclasses": 1}}))


@pytest.mark.slow
def test_best_predict_table_and_pareto_rank_within_the_protocol(two_protocols, tmp_path, capsys):
    import yaml

    from hier_tl.analysis.report import write_report
    from hier_tl.cli import main
    results, data, decided, other = two_protocols
    assert main(["best", str(results)]) == 2  # two protocols, none named: asks which, in one line
    err = capsys.readouterr().err.strip()
    assert "--protocol" in err and "'closed set'" in err and "'1 sub held out'" in err and "\n" not in err
    assert main(["best", str(results), "--protocol", "1 sub held out"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["trial_id"] == decided  # not `other`, the sweep's highest
    _decide_on_holdout(results)
    assert main(["best", str(results)]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["trial_id"] == decided
    assert main(["predict", str(results), "--images", str(data / "test_images"), "--out", str(tmp_path / "p.csv")]) == 0
    assert f"trial {decided} " in capsys.readouterr().out
    table, _, out = write_report(str(results), str(tmp_path / "report"))
    assert table[table.decides]["best trial"].iloc[0] == decided and table.P.iloc[0] == "P1"
    assert {table.protocol.iloc[0], table.protocol.iloc[-1]} == {"1 sub held out", "closed set"}
    md = (out / "report.md").read_text()  # a front per protocol: the closed set has no novel image to draw
    assert (out / "pareto_p1.png").is_file() and "validation holds no novel" in md.split("## P2")[1]
    assert main(["best", str(results), "--protocol", "2"]) == 0  # numbered as in the report: P2
    assert yaml.safe_load(capsys.readouterr().out)["trial_id"] == other
