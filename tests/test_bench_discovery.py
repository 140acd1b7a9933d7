"""bench/discovery.py: the validation table of category discovery measures what `predict --discover` does, on
the validation images alone, whatever joins the pool (`--with-images`) or leaves the bank (`--bank-per-class`)."""

import importlib.util
import math
from dataclasses import replace
from pathlib import Path

import torch

from hier_tl.data.taxonomy import NOVEL, LabelSpace
from hier_tl.train.outputs import Outputs

SPACE = LabelSpace((0, 1), (10, 11, 12, 13), (0, 0, 1, 1), 2, 14)


def _bench():
    spec = importlib.util.spec_from_file_location("bench_discovery", Path(__file__).parents[1] / "bench/discovery.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _near(axis: int, n: int, g) -> torch.Tensor:
    return torch.eye(16)[axis] * 4 + 0.3 * torch.randn(n, 16, generator=g)


def _fold(g) -> Outputs:
    """20 validation images of each known subclass (confident logits) and 40 of a new breed of superclass 0
    (axis 4, its logits those of subclass 0); a bank of 20 per subclass."""
    feats = torch.cat([_near(k, 20, g) for k in range(4)] + [_near(4, 40, g)])
    sub = torch.cat([torch.arange(4).repeat_interleave(20), torch.zeros(40, dtype=torch.long)])
    sup = torch.tensor(SPACE.sub_parent)[sub]
    sub_target = torch.cat([torch.arange(4).repeat_interleave(20), torch.full((40,), NOVEL)])
    return Outputs(torch.eye(2)[sup] * 6, torch.eye(4)[sub] * 6, sup, sub_target, space=SPACE, backbone_feats=feats,
                   bank_backbone=torch.cat([_near(k, 20, g) for k in range(4)]),
                   bank_sub_target=torch.arange(4).repeat_interleave(20))


def _same(a: dict, b: dict, keys) -> bool:
    return all(math.isclose(a[k], b[k]) or (math.isnan(a[k]) and math.isnan(b[k])) for k in keys)


def _table(rows) -> dict:
    return {r["method"]: r for r in rows}


def test_the_table_scores_the_validation_images_with_a_crowd_or_a_smaller_bank():
    bench, out = _bench(), _fold(torch.Generator().manual_seed(0))
    base = _table(bench.rows_for(out, "msp", "tpr:0.95", 8, 0, (10,), (0.985,)))
    nb = "discover (neighbours at 0.985)"
    assert base[nb]["novel_sub_seen_super_acc"] >= 0.95 and base[nb]["seen_sub_acc"] >= 0.9
    assert base["per-image rule"]["novel_sub_seen_super_acc"] < 0.5  # msp cannot tell: the logits are alike
    empty = replace(out, _cache={}, super_logits=out.super_logits[:0], sub_logits=out.sub_logits[:0],
                    backbone_feats=out.backbone_feats[:0], super_target=None, sub_target=None)
    alone = _table(bench.rows_for(out, "msp", "tpr:0.95", 8, 0, (10,), (0.985,), crowd=empty))
    assert all(_same(alone[m], base[m], bench.KEYS) for m in base)  # an empty crowd changes nothing
    crowd = replace(empty, _cache={}, super_logits=torch.eye(2)[[0] * 60] * 6, sub_logits=torch.eye(4)[[0] * 60] * 6,
                    backbone_feats=_near(4, 60, torch.Generator().manual_seed(1)))  # more of the new breed
    with_crowd = _table(bench.rows_for(out, "msp", "tpr:0.95", 8, 0, (10,), (0.985,), crowd=crowd))
    assert with_crowd[nb]["novel_sub_seen_super_acc"] >= 0.95  # rows are the validation images, not the crowd's
    with_ref = replace(out, _cache={}, ref_feats=out.backbone_feats, bank_ref=out.bank_backbone)
    crowd_ref = replace(crowd, _cache={}, ref_feats=crowd.backbone_feats)  # reference features join the pool too
    rows = _table(bench.rows_for(with_ref, "msp", "tpr:0.95", 8, 0, (10,), (0.985,), crowd=crowd_ref))
    assert rows[nb]["novel_sub_seen_super_acc"] >= 0.95
    few = _table(bench.rows_for(out, "msp", "tpr:0.95", 8, 0, (10,), (0.985,), bank_per_class=5))
    assert _same(few["per-image rule"], base["per-image rule"], bench.KEYS)  # the rules keep the whole bank
    assert few[nb]["novel_sub_seen_super_acc"] >= 0.9
