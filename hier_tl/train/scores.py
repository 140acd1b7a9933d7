"""Post-hoc novelty scores beyond the logits: backbone features, class-conditional statistics, fusion.

Each is a registry entry `fn(out, level)` over a `metrics.Outputs`: the images' logits, projection and
backbone features, and the training bank (the same features, logits and subclass labels of up to
`train.BANK_SIZE` unaugmented training images). Everything is re-scored from saved outputs; nothing
retrains. Higher = more familiar, as for every score. Costs (bank of N images, d-dim features, Q queries):

- `knn_backbone`: cosine k-NN on L2-normalised backbone features: O(Q N d) time, the bank in memory.
- `mahalanobis`: distance to the nearest seen-subclass mean under one shared (tied) covariance, on
  L2-normalised backbone features, with shrinkage: O(N d^2 + d^3) to fit, O(Q d (d + C)) to score.
- `vim`: ViM (Wang et al., 2022): energy minus alpha x the norm of the projection feature outside the
  bank's principal subspace (half the dimensions); alpha matches the two terms' scales on the bank.
- `fusion`: mean of the z-scored `knn_backbone`, `mahalanobis` and `vim`, each standardised on half of
  the bank scored against the other half (so no image is its own neighbour).
- `pretrained_mahalanobis`, `pretrained_knn`: the same measures on the features of a frozen ImageNet
  backbone that never saw the fine-tuning (`reference.py`; `reference_backbone` at `reference_size` px).
- `pretrained_hier`: superclass level `pretrained_mahalanobis`, subclass level `fusion`.
- `pretrained_hgauss`: the hierarchy as Gaussians on the reference features: the best of each seen subclass
  N(mean, W) (W the tied within-subclass covariance) and, per seen superclass, a new member N(m_s, W + B_s)
  (B_s the spread of its subclasses' means): an image is unfamiliar only when it is far from every seen
  subclass and no plausible new subclass of any seen superclass. O(S C^2 d) more than `mahalanobis`.
- `pretrained_hier_hgauss`: superclass level `pretrained_hgauss`, subclass level `fusion`.
- `hier`: the hierarchy-aware rule. Subclass level = `fusion`; superclass level = the lower of the
  z-scored superclass energy and the subclass-level `fusion`: an image far from every seen subclass is
  unfamiliar at the superclass level too, whatever the superclass head says.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.errors import ConfigError
from .novelty import energy, knn_similarity, register_score

SHRINK = 0.1  # covariance shrinkage towards its mean eigenvalue
FUSED = ("knn_backbone", "mahalanobis", "vim")


def _need(out, *fields: str) -> None:
    missing = [f for f in fields if getattr(out, f, None) is None]
    if missing:
        raise ConfigError(f"these outputs lack {', '.join(missing)}: re-run the training with this score "
                          "requested (older checkpoints saved the projection bank only)")


@register_score("knn_backbone", features=True, same_levels=True)
def knn_backbone(out, level: str) -> torch.Tensor:
    """Cosine similarity to the 10th nearest training image in backbone-feature space (both levels)."""
    _need(out, "backbone_feats", "bank_backbone")
    return knn_similarity(out.backbone_feats, out.bank_backbone)


def _class_stats(bank: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class means and the shrunk inverse of the tied within-class covariance (float64)."""
    x = F.normalize(bank.double(), dim=1)
    classes, inverse = labels.unique(return_inverse=True)
    means = torch.zeros(len(classes), x.shape[1], dtype=x.dtype).index_add_(0, inverse, x)
    means /= torch.bincount(inverse, minlength=len(classes)).clamp(min=1)[:, None]
    r = x - means[inverse]
    cov = r.T @ r / max(1, len(x) - len(classes))
    cov = (1 - SHRINK) * cov + SHRINK * cov.trace() / len(cov) * torch.eye(len(cov), dtype=x.dtype)
    return means, torch.linalg.inv(cov)


def _distances(q: torch.Tensor, means: torch.Tensor, prec: torch.Tensor) -> torch.Tensor:
    """Squared Mahalanobis distances (Q x C) of the rows of `q` to each class mean under precision `prec`."""
    qp = q @ prec
    return (qp * q).sum(1, keepdim=True) - 2 * qp @ means.T + ((means @ prec) * means).sum(1)[None, :]


def _mahalanobis(feats: torch.Tensor, bank: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Minus the squared Mahalanobis distance of each (normalised) row of `feats` to the nearest class mean."""
    means, prec = _class_stats(bank, labels)
    return (-_distances(F.normalize(feats.double(), dim=1), means, prec).min(1).values).float()


def _hierarchical_gaussian(feats: torch.Tensor, bank: torch.Tensor, labels: torch.Tensor,
                           parent: torch.Tensor) -> torch.Tensor:
    """Log-density (up to one constant) of each normalised row of `feats` under the best of: each seen
    subclass, N(mean_c, W); and a new member of each seen superclass s, N(m_s, W + B_s), where m_s and B_s are
    the mean and covariance of s's subclass means (a new breed's mean is drawn like its siblings'). B_s has
    rank below the number of siblings, so Woodbury keeps it at one inverse of W."""
    means, prec = _class_stats(bank, labels)
    q = F.normalize(feats.double(), dim=1)
    best = -0.5 * _distances(q, means, prec).min(1).values
    sup = parent[labels.unique()]
    for s in sup.unique():
        m = means[sup == s]
        if len(m) < 2:
            continue
        u = (m - m.mean(0)).T / (len(m) - 1) ** 0.5  # B_s = u u^T
        a = torch.eye(len(m), dtype=u.dtype) + u.T @ prec @ u
        r = q - m.mean(0)
        rp = r @ prec
        v = rp @ u
        d = (rp * r).sum(1) - (v @ torch.linalg.inv(a) * v).sum(1)
        best = torch.maximum(best, -0.5 * (d + torch.logdet(a)))
    return best.float()


@register_score("mahalanobis", features=True, same_levels=True)
def mahalanobis(out, level: str) -> torch.Tensor:
    """Minus the squared Mahalanobis distance to the nearest seen-subclass mean (both levels)."""
    _need(out, "backbone_feats", "bank_backbone", "bank_sub_target")
    return _mahalanobis(out.backbone_feats, out.bank_backbone, out.bank_sub_target)


@register_score("pretrained_mahalanobis", features=True, reference=True, same_levels=True)
def pretrained_mahalanobis(out, level: str) -> torch.Tensor:
    """`mahalanobis` on the frozen ImageNet reference features (`reference.py`), seen-subclass means."""
    _need(out, "ref_feats", "bank_ref", "bank_sub_target")
    return _mahalanobis(out.ref_feats, out.bank_ref, out.bank_sub_target)


@register_score("pretrained_hgauss", features=True, reference=True, same_levels=True)
def pretrained_hgauss(out, level: str) -> torch.Tensor:
    """Hierarchical Gaussian on the reference features: familiar when close to a seen subclass *or* a plausible
    new member of a seen superclass (`_hierarchical_gaussian`), so a new breed is judged against its siblings."""
    _need(out, "ref_feats", "bank_ref", "bank_sub_target", "space")
    parent = torch.tensor(out.space.sub_parent)
    return _hierarchical_gaussian(out.ref_feats, out.bank_ref, out.bank_sub_target, parent)


@register_score("pretrained_knn", features=True, reference=True, same_levels=True)
def pretrained_knn(out, level: str) -> torch.Tensor:
    """Cosine similarity to the 10th nearest training image in reference-feature space."""
    _need(out, "ref_feats", "bank_ref")
    return knn_similarity(out.ref_feats, out.bank_ref)


@register_score("vim", features=True)
def vim(out, level: str) -> torch.Tensor:
    """ViM on the projection features (the heads are linear in them) with that level's logits."""
    _need(out, "bank_super_logits", "bank_sub_logits")
    bank_logits, b = out.bank_logits(level), out.bank.double()
    mu = b.mean(0)
    _, vecs = torch.linalg.eigh((b - mu).T @ (b - mu))
    resid = vecs[:, : b.shape[1] - b.shape[1] // 2]  # eigenvalues ascend: the smaller half spans the residual

    def norm(x):
        return ((x.double() - mu) @ resid).norm(dim=1)
    alpha = bank_logits.double().amax(1).mean() / norm(b).mean().clamp(min=1e-12)
    return (energy(out.logits(level)).double() - alpha * norm(out.feats)).float()


def _zscored(name: str, out, level: str) -> torch.Tensor:
    """Score `name` of `out`'s images against half the bank, standardised on the other half (the two
    halves are made once per outputs, so each part is computed once for both levels)."""
    if "halves" not in out._cache:
        half = torch.arange(len(out.bank)) % 2 == 0
        out._cache["halves"] = out.with_bank(half), out.bank_as_queries(~half, half)
    ref, held = out._cache["halves"]
    s, h = ref.score(name, level), held.score(name, level)
    return (s - h.mean()) / h.std().clamp(min=1e-12)


@register_score("fusion", features=True)
def fusion(out, level: str) -> torch.Tensor:
    """Mean of the z-scored knn_backbone, mahalanobis and vim scores."""
    return torch.stack([_zscored(name, out, level) for name in FUSED]).mean(0)


@register_score("hier", features=True)
def hier(out, level: str) -> torch.Tensor:
    """Subclass level: fusion. Superclass level: min(z-scored superclass energy, subclass-level fusion)."""
    sub = out.score("fusion", "sub")
    if level == "sub":
        return sub
    return torch.minimum(_zscored("energy", out, "super"), sub)


@register_score("pretrained_hier", features=True, reference=True)
def pretrained_hier(out, level: str) -> torch.Tensor:
    """Superclass level: `pretrained_mahalanobis` (what a new kind of animal looks like to ImageNet
    features); subclass level: `fusion` of the fine-tuned features (what tells breeds apart)."""
    return out.score("pretrained_mahalanobis" if level == "super" else "fusion", level)


@register_score("pretrained_hier_hgauss", features=True, reference=True)
def pretrained_hier_hgauss(out, level: str) -> torch.Tensor:
    """Superclass level: `pretrained_hgauss` (a new breed of a known animal is not a new animal); subclass
    level: `fusion`."""
    return out.score("pretrained_hgauss" if level == "super" else "fusion", level)
