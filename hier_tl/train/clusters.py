"""Category discovery on the images being labelled (transductive: it looks at the whole unlabelled set at once).

Neighbours decide which images are new breeds: an image of a seen subclass has training images of its
subclass among its nearest neighbours in the training bank and the folder together, an image of a new breed
has mostly other images of the folder (its own breed), as no training image is like it. The share of
training images among an image's `NEIGHBOURS` nearest (cosine; backbone features, beside the frozen
reference features where the trial has them) is its score; the threshold is the same score's
`NEIGHBOUR_KEEP` quantile from the top over the training images themselves (each left out of its own
neighbours), so it follows how large the folder is beside the bank: no threshold carried over from
validation. On validation pools this caught far more new breeds per point of seen-subclass accuracy than
clustering, and with a test folder in the pool it still did (bench/README, category discovery). The
images it calls novel in each superclass are then clustered among themselves (count by silhouette), as are
those already called a novel superclass, so `predict` says how many new groups it found at each level;
clustering does not change their labels.

Optionally (`new_clusters`), per seen superclass, semi-supervised k-means (in the spirit of Generalized Category
Discovery, Vaze et al. 2022) also clusters the images predicted in that superclass together with the training
bank's images of its subclasses, on L2-normalised backbone features (cosine k-means). The bank's images stay in
their own subclass's cluster; extra clusters seeded on the unlabelled images that are farthest from every known
subclass are free to form, and a cluster that ends with no training image is a novel subclass. `new_clusters`
extra clusters each (at most one per `IMAGES_PER_NEW_CLUSTER` of its images: over-clustering, voted over
`RESTARTS` seeds), or None: the count by silhouette over 0..`max_new`.

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
NEIGHBOURS = 20  # nearest neighbours (training bank and folder) whose share of training images scores an image
NEIGHBOUR_KEEP = 0.98  # training images (left out of their own neighbours) the threshold keeps (bench/README)
NEIGHBOUR_POOL = 50_000  # folder images the neighbours are searched among at most (a random sample beyond)
CHUNK = 1024  # query rows whose similarities are held at once
NEW_CLUSTERS = 10  # extra clusters per superclass when asked for (`new_clusters`): over-clustering
IMAGES_PER_NEW_CLUSTER = 30  # ... and at most one per this many of the superclass's images, so a small folder's
# known images are not split off into clusters of their own
RESTARTS = 5  # k-means runs (seeds) per superclass; an image is in a new cluster when most runs put it in one
SILHOUETTE_PER_CLASS = 20  # labelled images per known subclass in the silhouette that picks the count
SPLIT_SILHOUETTE = 0.25  # silhouette a split into groups must beat ("no substantial structure" below it)
SILHOUETTE_ROWS = 4000  # unlabelled images a silhouette is measured on at most (its distances are rows^2)


@dataclass
class Discovery:
    """What discovery found: predictions (head positions, NOVEL where novel) and the groups behind them."""

    sup: torch.Tensor
    sub: torch.Tensor
    new_clusters: dict[int, int]  # superclass head position -> groups among the images called its novel subclasses
    novel_super_clusters: int  # groups among the images called a novel superclass
    by_neighbours: int = 0  # images the neighbour rule called a novel subclass (the per-image rule had not)

    def summary(self) -> str:
        n_sub = int(((self.sub == NOVEL) & (self.sup != NOVEL)).sum())
        return (f"discovery: {sum(self.new_clusters.values())} novel-subclass group(s) in "
                f"{sum(1 for v in self.new_clusters.values() if v)} superclass(es), {n_sub} image(s) called a novel "
                f"subclass of a known superclass ({self.by_neighbours} by their neighbours); "
                f"{self.novel_super_clusters} novel-superclass group(s) holding {int((self.sup == NOVEL).sum())} "
                "image(s)")


def discover(out, sup: torch.Tensor, sub: torch.Tensor, max_new: int = MAX_NEW, union: bool = True,
             seed: int = 0, new_clusters: int | None = 0, neighbours: int = NEIGHBOURS,
             keep: float = NEIGHBOUR_KEEP) -> Discovery:
    """Discovery over `out`'s images (an `Outputs` with backbone features and a training bank) given the
    per-image predictions `sup`, `sub` (head positions, NOVEL where novel): images whose `neighbours` nearest
    hold too few training images (`neighbour_novel`, threshold from the bank at `keep`) become novel subclasses
    (0: no neighbour rule). `new_clusters` K > 0: also K extra k-means clusters per superclass, whose images
    are novel (at most one per `IMAGES_PER_NEW_CLUSTER` of its images); None: their count by silhouette among
    0..`max_new`; 0: no clustering rule. With `union`, an image stays novel where the per-image rule said so;
    otherwise the clusters decide (images in a known subclass's cluster get that subclass)."""
    x = F.normalize(out.backbone_feats.double(), dim=1)
    bank = F.normalize(out.bank_backbone.double(), dim=1)
    g = torch.Generator().manual_seed(seed)
    sub, found = sub.clone(), None
    if new_clusters != 0 or not union:
        sub, found = _cluster_rule(out, x, bank, sup, sub, max_new, union, new_clusters, g)
    flagged = torch.zeros(len(x), dtype=torch.bool)
    if neighbours and len(bank) and len(x):
        flagged = neighbour_novel(*_neighbour_space(out), neighbours, keep, g) & (sup != NOVEL) & (sub != NOVEL)
    sub[flagged] = NOVEL
    if found is None:  # no k-means: the groups among the images called novel in each superclass
        found = {s: _groups(x[(sup == s) & (sub == NOVEL)], max_new, g) for s in range(len(out.space.supers))}
    return Discovery(sup, sub, found, _groups(x[sup == NOVEL], max_new, g), int(flagged.sum()))


def _neighbour_space(out) -> tuple[torch.Tensor, torch.Tensor]:
    """The features neighbours are found in: the backbone's, side by side with the frozen reference features
    where the outputs carry them (each L2-normalised, then the pair). The reference features are not fitted to
    the training images, so those sit no tighter among themselves than the folder's do; on the published folds
    the pair caught more new breeds at fewer points, on a validation pool and with a test folder added."""
    x, bank = (F.normalize(t.float(), dim=1) for t in (out.backbone_feats, out.bank_backbone))
    if out.ref_feats is not None and out.bank_ref is not None:
        x = F.normalize(torch.cat([x, F.normalize(out.ref_feats.float(), dim=1)], 1), dim=1)
        bank = F.normalize(torch.cat([bank, F.normalize(out.bank_ref.float(), dim=1)], 1), dim=1)
    return x, bank


def neighbour_novel(x, bank, k: int = NEIGHBOURS, keep: float = NEIGHBOUR_KEEP, g=None) -> torch.Tensor:
    """Which rows of `x` (L2-normalised folder features) have a smaller share of training images among their k
    nearest neighbours (the bank and at most `NEIGHBOUR_POOL` sampled folder rows, themselves left out) than
    `keep` of the bank's own rows have (each left out of its own neighbours). Ties in the share are broken by
    the similarity to the nearest training image."""
    some = _some(len(x), g, NEIGHBOUR_POOL)
    ref = torch.cat([bank, x[some]])
    self_col = torch.full((len(x),), -1, dtype=torch.long)
    self_col[some] = len(bank) + torch.arange(len(some))
    k = min(k, len(ref) - 1)
    own = _share(bank, ref, len(bank), torch.arange(len(bank)), k)
    return _share(x, ref, len(bank), self_col, k) < torch.quantile(own, 1 - keep)


def _share(q, ref, n_bank: int, self_col, k: int) -> torch.Tensor:
    """Per row of `q`: share of its k nearest rows of `ref` that are among the first `n_bank` (the training
    bank), plus 1e-3 x its similarity to the nearest of those (a tie-break below one neighbour's step); the row
    `self_col` (-1: none) is left out."""
    scores = []
    for at in range(0, len(q), CHUNK):
        sim = q[at:at + CHUNK] @ ref.T
        own = self_col[at:at + CHUNK]
        hit = torch.nonzero(own >= 0).flatten()
        sim[hit, own[hit]] = -float("inf")
        share = (sim.topk(k, dim=1).indices < n_bank).float().mean(1)
        scores.append(share + 1e-3 * sim[:, :n_bank].max(1).values.clamp(min=-1))
    return torch.cat(scores)


def _groups(x, max_new: int, g) -> int:
    return _count_clusters(x, max_new, g) if len(x) > 2 else int(len(x) > 0)


def _cluster_rule(out, x, bank, sup, sub, max_new: int, union: bool, new_clusters: int | None, g):
    """Semi-supervised k-means per seen superclass (module docstring): `sub` with the images in extra clusters
    called novel (and, without `union`, the others given their cluster's subclass), and per superclass how
    many extra clusters kept an image."""
    parent = torch.tensor(out.space.sub_parent)
    bank_sup = parent[out.bank_sub_target]
    found = {}
    for s in range(len(out.space.supers)):
        found[s] = 0
        rows = torch.nonzero(sup == s).flatten()
        kids = torch.nonzero(parent == s).flatten()
        labelled = bank_sup == s
        if len(rows) < 2 or not labelled.any():
            continue
        lab_x, lab_y = bank[labelled], out.bank_sub_target[labelled]
        if new_clusters is None:
            assign, found[s] = _best_clustering(x[rows], lab_x, lab_y, kids, max_new, g)
            in_new = assign >= len(kids)
        else:
            k = min(new_clusters, len(rows) // IMAGES_PER_NEW_CLUSTER)
            assign, in_new, found[s] = _voted(x[rows], lab_x, _position(lab_y, kids), len(kids), k, g)
        known = kids[assign.clamp(max=len(kids) - 1)]
        cluster_sub = torch.where(in_new, torch.full_like(known, NOVEL), known)
        sub[rows] = torch.where(in_new | (sub[rows] == NOVEL), NOVEL, sub[rows]) if union else cluster_sub
    return sub, found


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


def _some(n: int, g, cap: int | None = None) -> torch.Tensor:
    """Which of n rows a silhouette (or the neighbour search) is measured on: all, or `cap` (default
    `SILHOUETTE_ROWS`) drawn at random (a folder of millions of images would need terabytes of distances)."""
    cap = SILHOUETTE_ROWS if cap is None else cap
    return torch.arange(n) if n <= cap else torch.randperm(n, generator=g)[:cap]


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
    scores above `SPLIT_SILHOUETTE`: a split of one round cloud scores 0.1-0.2)."""
    some = _some(len(x), g)
    best_k, best_sil, dist = 1, SPLIT_SILHOUETTE, (1 - x[some] @ x[some].T).clamp(min=0)
    for k in range(2, min(max_new, len(x) - 1) + 1):
        centres = _seed_new(x, F.normalize(x.mean(0, keepdim=True), dim=1), k, g)
        assign = _ss_kmeans(x, x[:0], torch.zeros(0, dtype=torch.long), centres)
        if assign.unique().numel() > 1 and (sil := _silhouette(dist, assign[some])) > best_sil:
            best_k, best_sil = int(assign.unique().numel()), sil
    return best_k
