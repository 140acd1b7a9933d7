"""`predict --discover`: transductive category discovery over the images of the folder being labelled
(`train.clusters`): what the clusters say changes the predictions, and what was found is printed."""

from __future__ import annotations

import sys

import torch

from ..core.errors import SelectionError
from ..train.clusters import NEW_CLUSTERS, discover


def discover_in(out, sup: torch.Tensor, sub: torch.Tensor,
                new_clusters: int | str = "default") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image predictions (head positions) -> the same after discovery; prints the clusters and how many
    images it called novel at each level. `new_clusters`: extra clusters per superclass, 'default'
    (`clusters.NEW_CLUSTERS`) or 'auto' (the count with the best silhouette). SelectionError when the outputs
    hold no backbone features and bank (a trial whose novelty score reads the logits alone)."""
    if out.backbone_feats is None or out.bank_backbone is None or out.bank_sub_target is None:
        raise SelectionError("--discover clusters backbone features against the training bank, which this "
                             "checkpoint does not keep: use a trial with a feature novelty score (e.g. fusion, "
                             "pretrained_hier)")
    k = {"auto": None, "default": NEW_CLUSTERS}.get(new_clusters, new_clusters)
    found = discover(out, sup, sub, new_clusters=k)
    print(found.summary(), file=sys.stderr)
    return found.sup, found.sub
