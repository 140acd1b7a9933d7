"""Category discovery on the images being labelled (transductive: it looks at the whole unlabelled set at once).

Per seen superclass, semi-supervised k-means (in the spirit of Generalized Category Discovery, Vaze et al.
2022) clusters the images predicted in that superclass together with the training bank's images of its
subclasses, on L2-normalised backbone features (cosine k-means). The bank's images stay in their own
subclass's cluster; extra clusters seeded on the unlabelled images that are farthest from every known
subclass are free to form. A cluster that ends with no training image is a novel subclass: its images are
called novel at the subclass level. Each superclass gets `NEW_CLUSTERS` extra clusters (at most one per
`IMAGES_PER_NEW_CLUSTER` of its images): over-clustering, so a new breed may fill several clusters, each novel,
and a split of a known subclass's images stays rare because the known centres hold their training images.
On validation pools this caught far more new breeds per point of seen-subclass accuracy than choosing the
count by silhouette (which found 0-2 clusters where 3 new breeds were held out; `new_clusters=None` still
does that, over 0..`max_new`). The images already called a novel superclass are clustered among themselves
(count by silhouette too), so the number of novel-superclass groups is reported; their labels do not change.

This changes nothing unless asked (`predict --discover`): a prediction then depends on the other images of
the folder. Validation treats each validation split as the unlabelled set (`bench/discovery.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.taxonomy import NOVEL

ITERATIONS = 30
MAX_NEW = 8  # extra clusters the silhouette tries per superclass (`new_clusters=None`)
NEW_CLUSTERS = 10  # extra clusters per superclass by default: over-clustering (bench/README, category discovery)
IMAGES_PER_NEW_CLUSTER = 30  # ... and at most one per this many of the superclass's images, so a small folder's
# known images are not split off into clusters of their own
RESTARTS = 5  # k-means runs (seeds) per superclass; an image is in a new cluster when most runs put it in one
SILHOUETTE_PER_CLASS = 20  # labelled images per known subclass in the silhouette that picks the count
SILHOUETTE_ROWS = 4000  # unlabelled images a silhouette is measured on at most (its distances are rows^2)


@dataclass
class Discovery:
    """What discovery found: predictions (head positions, NOVEL where novel) and the clusters behind them."""

    sup: torch.Tensor
    sub: torch.Tensor
    new_clusters: dict[int, int]  # superclass head position -> novel-subclass clusters found
    novel_super_clusters: int  # groups among the images called a novel superclass

    def summary(self) -> str:
        n_sub = int(((self.sub == NOVEL) & (self.sup != NOVEL)).sum())
        return (f"discovery: {sum(self.new_clusters.values())} novel-subclass cluster(s) in "
                f"{sum(1 for v in self.new_clusters.values() if v)} superclass(es), {n_sub} image(s) called a novel "
                f"subclass of a known superclass; {self.novel_super_clusters} novel-superclass cluster(s) holding "
                f"{int((self.sup == NOVEL).sum())} image(s)")


def discover(out, sup: torch.Tensor, sub: torch.Tensor, max_new: int = MAX_NEW, union: bool = True,
             seed: int = 0, new_clusters: int | None = NEW_CLUSTERS) -> Discovery:
    """Cluster `out`'s images (an `Outputs` with backbone features and a training bank) given the per-image
    predictions `sup`, `sub` (head positions, NOVEL where novel). With `union`, an image stays novel at the
    subclass level when the per-image rule said so; otherwise the clusters alone decide (images in a known
    subclass's cluster get that subclass). `new_clusters`: that many extra clusters per superclass
    (over-clustering: several clusters may hold one new breed, each still novel), at most one per
    `IMAGES_PER_NEW_CLUSTER` of its images; None: the count with the best silhouette among 0..`max_new`."""
    x = F.normalize(out.backbone_feats.double(), dim=1)
    bank = F.normalize(out.bank_backbone.double(), dim=1)
    parent = torch.tensor(out.space.sub_parent)
    bank_sup = parent[out.bank_sub_target]
    sub, found = sub.clone(), {}
    g = torch.Generator().manual_seed(seed)
    for s in range(len(out.space.supers)):
        rows = torch.nonzero(sup == s).flatten()
        kids = torch.nonzero(parent == s).flatten()
        labelled = bank_sup == s
        if len(rows) < 2 or not labelled.any():
            found[s] = 0
            continue
        lab_x, lab_y = bank[labelled], out.bank_sub_target[labelled]
        if new_clusters is None:
            assign, k_new = _best_clustering(x[rows], lab_x, lab_y, kids, max_new, g)
            in_new = assign >= len(kids)
        else:
            k = min(new_clusters, len(rows) // IMAGES_PER_NEW_CLUSTER)
            assign, in_new, k_new = _voted(x[rows], lab_x, _position(lab_y, kids), len(kids), k, g)
        found[s] = k_new
        known = kids[assign.clamp(max=len(kids) - 1)]
        cluster_sub = torch.where(in_new, torch.full_like(known, NOVEL), known)
        sub[rows] = torch.where(in_new | (sub[rows] == NOVEL), NOVEL, sub[rows]) if union else cluster_sub
    pool = torch.nonzero(sup == NOVEL).flatten()
    n_super = _count_clusters(x[pool], max_new, g) if len(pool) > 2 else int(len(pool) > 0)
    return Discovery(sup, sub, found, n_super)


def _best_clustering(u, lab_x, lab_y, kids, max_new: int, g) -> tuple[torch.Tensor, int]:
    """Semi-supervised k-means of unlabelled rows `u` with labelled rows (subclass `lab_y` among `kids`) for
    0..max_new extra clusters; the assignment of `u` (cluster index, the known subclasses first) whose
    silhouette over the unlabelled rows and a sample of the labelled ones (`SILHOUETTE_PER_CLASS` each, in
    their subclass's cluster) is best, and its number of extra clusters that kept at least one image. The
    labelled rows are what make "a new cluster" differ from "joined a known subclass far from its images"."""
    pos = _position(lab_y, kids)
    sample = torch.cat([torch.nonzero(pos == k).flatten()[:SILHOUETTE_PER_CLASS] for k in range(len(kids))])
    some = _some(len(u), g)
    rows = torch.cat([u[some], lab_x[sample]])
    dist = (1 - rows @ rows.T).clamp(min=0)
    best, best_sil = None, -2.0
    for k_new in range(min(max_new, len(u) - 1) + 1):
        assign = _clustering(u, lab_x, pos, len(kids), k_new, g)
        sil = _silhouette(dist, torch.cat([assign[some], pos[sample]]))
        if best is None or sil > best_sil + 1e-9:
            best, best_sil = (assign, int((assign.unique() >= len(kids)).sum())), sil
    return best


def _voted(u, lab_x, pos, n_known: int, k_new: int, g) -> tuple[torch.Tensor, torch.Tensor, int]:
    """`RESTARTS` clusterings (`_clustering`) with different seeds: each row's known cluster (its first run's,
    or the nearest known centre where that run put it in an extra one), which rows most runs put in an extra
    cluster (the k-means++ seeds alone moved the new breeds caught by +-7 points from run to run), and the
    median number of extra clusters that kept a row."""
    runs = [_clustering(u, lab_x, pos, n_known, k_new, g) for _ in range(RESTARTS if k_new else 1)]
    votes = torch.stack([a >= n_known for a in runs]).double().mean(0)
    kept = sorted(int((a.unique() >= n_known).sum()) for a in runs)
    nearest = (u @ _known_centres(lab_x, pos, n_known).T).argmax(1)
    return torch.where(runs[0] < n_known, runs[0], nearest), votes > 0.5, kept[len(kept) // 2]


def _known_centres(lab_x, pos, n_known: int) -> torch.Tensor:
    return torch.stack([F.normalize(lab_x[pos == k].mean(0), dim=0) for k in range(n_known)])


def _clustering(u, lab_x, pos, n_known: int, k_new: int, g) -> torch.Tensor:
    """Semi-supervised k-means of `u` with the known subclasses' centres (labelled rows at positions `pos`)
    and `k_new` extra centres seeded on `u`: the cluster of each row of `u`, the known subclasses first."""
    known = _known_centres(lab_x, pos, n_known)
    return _ss_kmeans(u, lab_x, pos, torch.cat([known, _seed_new(u, known, k_new, g)]))


def _position(lab_y: torch.Tensor, kids: torch.Tensor) -> torch.Tensor:
    return (lab_y[:, None] == kids[None, :]).float().argmax(1)


def _seed_new(u, known, k: int, g) -> torch.Tensor:
    """k-means++ seeds among the unlabelled rows, away from the known centres and from each other."""
    centres = known
    for _ in range(k):
        d = (1 - u @ centres.T).clamp(min=0).min(1).values
        pick = torch.multinomial(d.float() ** 2 + 1e-12, 1, generator=g)
        centres = torch.cat([centres, u[pick]])
    return centres[len(known):]


def _ss_kmeans(u, lab_x, lab_pos, centres) -> torch.Tensor:
    """Cosine k-means where labelled rows stay in their cluster (`lab_pos`); returns the unlabelled assignment."""
    k = len(centres)
    lab_sum = torch.zeros(k, u.shape[1], dtype=u.dtype).index_add_(0, lab_pos, lab_x)
    assign = None
    for _ in range(ITERATIONS):
        new = (u @ centres.T).argmax(1)
        if assign is not None and torch.equal(new, assign):
            break
        assign = new
        sums = lab_sum.clone().index_add_(0, assign, u)
        empty = sums.norm(dim=1) == 0
        centres = torch.where(empty[:, None], centres, F.normalize(sums, dim=1))
    return assign


def _some(n: int, g) -> torch.Tensor:
    """Which of n rows a silhouette is measured on: all, or `SILHOUETTE_ROWS` drawn at random (a folder of
    millions of images would need terabytes of pairwise distances)."""
    return torch.arange(n) if n <= SILHOUETTE_ROWS else torch.randperm(n, generator=g)[:SILHOUETTE_ROWS]


def _silhouette(dist, assign) -> float:
    """Mean silhouette of rows with pairwise distances `dist` under cluster labels `assign` (0 for a lone member)."""
    labels, idx = assign.unique(return_inverse=True)
    if len(labels) < 2:
        return -1.0
    onehot = F.one_hot(idx, len(labels)).double()
    sizes = onehot.sum(0)
    sums = dist @ onehot  # each row's summed distance to each cluster
    own = sizes[idx]
    a = sums.gather(1, idx[:, None]).squeeze(1) / (own - 1).clamp(min=1)
    b = (sums / sizes).scatter(1, idx[:, None], float("inf")).min(1).values
    s = (b - a) / torch.maximum(a, b).clamp(min=1e-12)
    return float(s.masked_fill(own <= 1, 0).mean())


def _count_clusters(x, max_new: int, g) -> int:
    """How many groups the rows `x` form: plain cosine k-means, k (1..max_new) by silhouette (1 when no split
    scores above 0)."""
    some = _some(len(x), g)
    best_k, best_sil, dist = 1, 0.0, (1 - x[some] @ x[some].T).clamp(min=0)
    for k in range(2, min(max_new, len(x) - 1) + 1):
        centres = _seed_new(x, F.normalize(x.mean(0, keepdim=True), dim=1), k, g)
        assign = _ss_kmeans(x, x[:0], torch.zeros(0, dtype=torch.long), centres)
        if assign.unique().numel() > 1 and (sil := _silhouette(dist, assign[some])) > best_sil:
            best_k, best_sil = int(assign.unique().numel()), sil
    return best_k
