"""`predict --discover`: transductive category discovery over the images of the folder being labelled
(`train.clusters`): each image's neighbours among the training bank and the folder decide whether it is a new
breed (instead of the per-image subclass threshold), and what was found is printed."""

from __future__ import annotations

import sys

import torch

from ..core.errors import SelectionError
from ..train.clusters import NEIGHBOUR_KEEP, discover

SMALL_FOLDER = 400  # images below which discovery warns: on validation, 400 still caught 83% of new breeds


def discover_in(out, sup: torch.Tensor, sub: torch.Tensor,
                new_clusters: int | str = "default") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image predictions (head positions; the subclass level before any subclass threshold) -> the same
    after discovery; prints the groups found and how many images it called novel at each level.
    `new_clusters`: 'default' (the neighbour rule alone), K (also K extra k-means clusters per superclass) or
    'auto' (their count by silhouette). SelectionError when the outputs hold no backbone features and bank (a
    trial whose novelty score reads the logits alone)."""
    if out.backbone_feats is None or out.bank_backbone is None or out.bank_sub_target is None:
        raise SelectionError("--discover compares backbone features with the training bank, which this "
                             "checkpoint does not keep: use a trial with a feature novelty score (e.g. fusion, "
                             "pretrained_hier)")
    k = {"auto": None, "default": 0}.get(new_clusters, new_clusters)
    if len(sup) < SMALL_FOLDER:
        print(f"warning: --discover compares each image with the folder's others, and {len(sup)} image(s) give it "
              f"little to go on: expect fewer new breeds caught and more seen images called novel (on validation, "
              f"folders of 100 images: 57% of new breeds for 4.6 points of seen subclass; bench/README.md)",
              file=sys.stderr)
    print(f"discovery: the subclass level is decided by each image's neighbours (threshold: {NEIGHBOUR_KEEP:.1%} of "
          "the training images kept), not by the subclass threshold", file=sys.stderr)
    found = discover(out, sup, sub, new_clusters=k)
    print(found.summary(), file=sys.stderr)
    return found.sup, found.sub
