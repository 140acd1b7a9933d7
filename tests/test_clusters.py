"""train.clusters: category discovery calls a new breed novel from its neighbours (or finds it as a cluster of
its own), leaves known subclasses in theirs, and counts the groups among the images called novel."""

from dataclasses import replace

import torch
import torch.nn.functional as F

from hier_tl.data.taxonomy import NOVEL, LabelSpace
from hier_tl.train import clusters
from hier_tl.train.clusters import NEW_CLUSTERS, discover
from hier_tl.train.outputs import Outputs

SPACE = LabelSpace((0, 1), (10, 11, 12, 13), (0, 0, 1, 1), 2, 14)  # superclass 0: subclasses 0, 1; 1: 2, 3


def _near(axis: int, n: int, g) -> torch.Tensor:
    return torch.eye(16)[axis] * 4 + 0.3 * torch.randn(n, 16, generator=g)


def _pool(g):
    """Bank: 20 images per subclass around axes 0-3. Pool: 10 of subclass 0, 10 of a new breed of superclass 0
    (axis 4), 10 of subclass 2, and 2 x 10 of two new animals (axes 8, 12) already called a novel superclass."""
    bank = torch.cat([_near(k, 20, g) for k in range(4)])
    pool = torch.cat([_near(0, 10, g), _near(4, 10, g), _near(2, 10, g), _near(8, 10, g), _near(12, 10, g)])
    sup = torch.tensor([0] * 20 + [1] * 10 + [NOVEL] * 20)
    sub = torch.tensor([0] * 10 + [1] * 10 + [2] * 10 + [NOVEL] * 20)  # the new breed taken for subclass 1
    out = Outputs(torch.zeros(50, 2), torch.zeros(50, 4), space=SPACE, backbone_feats=pool, bank_backbone=bank,
                  bank_sub_target=torch.arange(4).repeat_interleave(20))
    return out, sup, sub


def test_silhouette_finds_a_new_breed_as_one_cluster_and_known_subclasses_stay():
    out, sup, sub = _pool(torch.Generator().manual_seed(0))
    found = discover(out, sup, sub, new_clusters=None, neighbours=0)
    assert found.new_clusters == {0: 1, 1: 0}
    assert (found.sub[10:20] == NOVEL).all()  # the new breed, caught
    assert torch.equal(found.sub[:10], sub[:10]) and torch.equal(found.sub[20:30], sub[20:30])
    assert torch.equal(found.sup, sup) and (found.sub[30:] == NOVEL).all()  # superclass decisions unchanged
    assert found.novel_super_clusters == 2
    assert "1 novel-subclass group(s) in 1 superclass(es), 10 image(s)" in found.summary()


def test_clusters_decide_gives_a_known_cluster_its_subclass_back():
    """With union=False the clusters alone decide: a seen image the per-image rule called novel, sitting in its
    subclass's cluster, gets that subclass; with union=True it stays novel."""
    out, sup, sub = _pool(torch.Generator().manual_seed(1))
    sub[0] = NOVEL
    assert discover(out, sup, sub, union=False, new_clusters=None, neighbours=0).sub[0] == 0
    assert discover(out, sup, sub, union=True, new_clusters=None, neighbours=0).sub[0] == NOVEL


def test_over_clustering_catches_new_breeds_and_keeps_known_images():
    """`new_clusters=K`: a fixed number of extra clusters per superclass (at most one per IMAGES_PER_NEW_CLUSTER of
    its images), voted over restarts. Two new breeds of superclass 0 (60 + 30 images) among 90 images of its
    known subclasses: the new breeds fill extra clusters and are called novel, the known images keep their
    subclass although several extra centres are seeded among them."""
    g = torch.Generator().manual_seed(0)
    bank = torch.cat([_near(k, 20, g) for k in range(4)])
    pool = torch.cat([_near(0, 50, g), _near(1, 40, g), _near(4, 60, g), _near(5, 30, g), _near(2, 25, g)])
    n = len(pool)
    sup = torch.tensor([0] * 180 + [1] * 25)
    sub = torch.tensor([0] * 50 + [1] * 40 + [0] * 60 + [1] * 30 + [2] * 25)  # new breeds taken for known ones
    out = Outputs(torch.zeros(n, 2), torch.zeros(n, 4), space=SPACE, backbone_feats=pool, bank_backbone=bank,
                  bank_sub_target=torch.arange(4).repeat_interleave(20))
    found = discover(out, sup, sub, new_clusters=NEW_CLUSTERS, neighbours=0)
    assert found.new_clusters[0] >= 2 and found.new_clusters[1] == 0  # two groups found; none in superclass 1
    assert (found.sub[90:180] == NOVEL).float().mean() >= 0.95
    assert (found.sub[:90] == sub[:90]).float().mean() >= 0.95 and torch.equal(found.sub[180:], sub[180:])
    assert discover(out, sup, sub, new_clusters=None, neighbours=0).new_clusters[0] >= 1  # the silhouette too


def test_a_large_folder_is_clustered_without_all_pairwise_distances(monkeypatch):
    """The silhouettes (the novel-superclass groups, `auto`) are measured on a sample of rows: a folder of
    millions of images must not need rows^2 distances. With the cap at 30 rows, the 50-image pool above
    still finds its two novel-superclass groups and, by silhouette, its new breed."""
    monkeypatch.setattr(clusters, "SILHOUETTE_ROWS", 30)
    out, sup, sub = _pool(torch.Generator().manual_seed(0))
    big = out.backbone_feats.repeat(40, 1)  # 2,000 rows: the sample keeps the distances at 30 x 30
    seen = []
    real = clusters._silhouette
    monkeypatch.setattr(clusters, "_silhouette", lambda d, a: seen.append(d.shape[0]) or real(d, a))
    big_out = replace(out, backbone_feats=big, super_logits=torch.zeros(2000, 2), sub_logits=torch.zeros(2000, 4))
    found = discover(big_out, sup.repeat(40), sub.repeat(40), new_clusters=None, neighbours=0)
    assert max(seen) <= 30 + 2 * clusters.SILHOUETTE_PER_CLASS
    assert found.novel_super_clusters == 2 and found.new_clusters[0] >= 1


def _two_breeds(g, per_known: int = 50):
    """Bank: 20 images per subclass around axes 0-3. Folder: `per_known` images of each of subclasses 0 and 1,
    two new breeds of superclass 0 (axes 4, 5: 60 and 30 images, taken for known subclasses by the classifier)
    and `per_known` // 2 of subclass 2."""
    bank = torch.cat([_near(k, 20, g) for k in range(4)])
    sizes = [per_known, per_known, 60, 30, per_known // 2]
    pool = torch.cat([_near(axis, n, g) for axis, n in zip((0, 1, 4, 5, 2), sizes)])
    sub = torch.cat([torch.full((n,), s) for s, n in zip((0, 1, 0, 1, 2), sizes)])
    sup = (sub >= 2).long()
    breed = torch.zeros(len(pool), dtype=torch.bool)
    breed[2 * per_known:2 * per_known + 90] = True
    out = Outputs(torch.zeros(len(pool), 2), torch.zeros(len(pool), 4), space=SPACE, backbone_feats=pool,
                  bank_backbone=bank, bank_sub_target=torch.arange(4).repeat_interleave(20))
    return out, sup, sub, breed


def test_neighbours_call_new_breeds_novel_and_keep_known_images():
    """The default: an image whose nearest neighbours hold few training images is a new breed. Known images,
    2.5x as many per subclass in the folder as in the bank, keep their subclass: the threshold comes from the
    training images' own neighbours, so it follows the folder's size rather than a fixed share."""
    out, sup, sub, breed = _two_breeds(torch.Generator().manual_seed(0))
    found = discover(out, sup, sub)
    assert (found.sub[breed] == NOVEL).float().mean() >= 0.95
    assert (found.sub[~breed] == sub[~breed]).float().mean() >= 0.9  # 98.5% of the 80 training images' shares
    assert found.by_neighbours == int((found.sub == NOVEL).sum()) and torch.equal(found.sup, sup)
    assert found.new_clusters[0] >= 2 and found.new_clusters[1] <= 1  # the two breeds, counted as groups
    assert "(%d by their neighbours)" % found.by_neighbours in found.summary()
    assert (discover(out, sup, sub, neighbours=0).sub == sub).all()  # off: nothing changes


def test_the_neighbour_threshold_follows_the_folder_size():
    """A folder with 10x the bank's images per known subclass: a fixed share of training neighbours would
    call most known images novel; the threshold from the bank's own neighbours keeps them."""
    out, sup, sub, breed = _two_breeds(torch.Generator().manual_seed(1), per_known=200)
    found = discover(out, sup, sub)
    assert (found.sub[~breed] == sub[~breed]).float().mean() >= 0.9
    assert (found.sub[breed] == NOVEL).float().mean() >= 0.9
    x = F.normalize(out.backbone_feats, dim=1)
    ref = torch.cat([F.normalize(out.bank_backbone, dim=1), x])
    fixed = clusters._share(x, ref, 80, 80 + torch.arange(len(x)), 20)
    assert (fixed[~breed] < 0.25).float().mean() > 0.5  # "a quarter of the neighbours are training images": most


def test_neighbours_are_searched_in_chunks_and_among_a_sample_of_a_large_folder(monkeypatch):
    """Memory stays bounded: similarities are held `CHUNK` query rows at a time (same answer as one block),
    and beyond `NEIGHBOUR_POOL` folder images the neighbours come from a random sample of that many."""
    out, sup, sub, breed = _two_breeds(torch.Generator().manual_seed(2))
    whole = discover(out, sup, sub).sub
    monkeypatch.setattr(clusters, "CHUNK", 7)
    assert torch.equal(discover(out, sup, sub).sub, whole)
    refs, real = [], clusters._share
    monkeypatch.setattr(clusters, "NEIGHBOUR_POOL", 120)
    monkeypatch.setattr(clusters, "_share", lambda q, ref, *a: refs.append(len(ref)) or real(q, ref, *a))
    found = discover(out, sup, sub)
    assert set(refs) == {80 + 120}  # the bank and the sample
    assert (found.sub[breed] == NOVEL).float().mean() >= 0.9


def test_reference_features_join_the_neighbour_search_when_the_trial_has_them():
    """The frozen reference features (not fitted to the training images) sit beside the backbone's: a new
    breed the backbone cannot tell from subclass 0 but the reference features can is caught with them."""
    g = torch.Generator().manual_seed(3)
    out, sup, sub, breed = _two_breeds(g)
    blurred = out.backbone_feats.clone()
    blurred[breed] = _near(0, int(breed.sum()), g)  # the backbone sees subclass 0
    ref = torch.cat([_near(k, 50, g) for k in (6, 7)] + [_near(8, 90, g), _near(9, 25, g)])
    bank_ref = torch.cat([_near(k, 20, g) for k in (6, 7, 9, 10)])
    plain = replace(out, backbone_feats=blurred)
    with_ref = replace(plain, ref_feats=ref, bank_ref=bank_ref)
    assert (discover(plain, sup, sub).sub[breed] == NOVEL).float().mean() < 0.5
    found = discover(with_ref, sup, sub)
    assert (found.sub[breed] == NOVEL).float().mean() >= 0.9
    assert (found.sub[~breed] == sub[~breed]).float().mean() >= 0.9


def test_an_empty_folder_finds_nothing():
    """No image to label (every file of a folder unreadable): discovery answers with empty predictions."""
    out, sup, sub, _ = _two_breeds(torch.Generator().manual_seed(4))
    none = replace(out, super_logits=out.super_logits[:0], sub_logits=out.sub_logits[:0],
                   backbone_feats=out.backbone_feats[:0])
    found = discover(none, sup[:0], sub[:0])
    assert len(found.sub) == 0 and found.by_neighbours == 0 and found.novel_super_clusters == 0
