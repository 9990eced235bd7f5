"""Deep-clustering losses in low-rank form (never N x N)."""

from __future__ import annotations

import torch

from ._validation import check_choice, check_embeddings, check_labels, check_weights

__all__ = ["affinity_loss", "whitened_kmeans_loss", "voice_activity_weights", "magnitude_weights"]


def _stats(embeddings, labels, weights):
    b, n, d = embeddings.shape
    x = embeddings.float() if embeddings.dtype in (torch.float16, torch.bfloat16) else embeddings
    active = labels >= 0
    w = active.to(x.dtype) if weights is None else weights.to(x.dtype) * active
    n_cls = int(labels.max().clamp(min=0)) + 1
    keys = labels.clamp(min=0) + n_cls * torch.arange(b, device=x.device)[:, None]
    wv = x * w[..., None]
    gram = torch.bmm(x.transpose(1, 2), wv)
    s = torch.zeros(b * n_cls, d, dtype=x.dtype, device=x.device).index_add(0, keys.reshape(-1), wv.reshape(-1, d))
    c = torch.zeros(b * n_cls, dtype=x.dtype, device=x.device).index_add(0, keys.reshape(-1), w.reshape(-1))
    return gram, s.view(b, n_cls, d), c.view(b, n_cls), w.sum(1)


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def affinity_loss(embeddings, labels, weights=None, reduction="mean"):
    """Weighted deep-clustering affinity loss ||W^1/2 (VV^T - YY^T) W^1/2||^2 / (sum w)^2."""
    check_choice(reduction, "reduction", "affinity_loss", ("mean", "sum", "none"))
    embeddings = check_embeddings(embeddings, "embeddings")
    labels = check_labels(labels, embeddings.shape[:2])
    if weights is not None:
        weights = check_weights(weights, embeddings.shape[:2])
    with torch.autocast(embeddings.device.type, enabled=False):
        gram, s, c, z = _stats(embeddings, labels, weights)
        num = gram.square().sum((1, 2)) - 2 * s.square().sum((1, 2)) + c.square().sum(1)
        loss = torch.where(z > 0, num / z.clamp(min=1e-30).square(), torch.zeros_like(num))
    return _reduce(loss, reduction)


def whitened_kmeans_loss(embeddings, labels, weights=None, reduction="mean"):
    """Whitened k-means loss D - tr((V^T W V)^-1 V^T W Y (Y^T W Y)^-1 Y^T W V)."""
    check_choice(reduction, "reduction", "whitened_kmeans_loss", ("mean", "sum", "none"))
    embeddings = check_embeddings(embeddings, "embeddings")
    labels = check_labels(labels, embeddings.shape[:2])
    if weights is not None:
        weights = check_weights(weights, embeddings.shape[:2])
    d = embeddings.shape[2]
    with torch.autocast(embeddings.device.type, enabled=False):
        gram, s, c, z = _stats(embeddings, labels, weights)
        eye = torch.eye(d, dtype=gram.dtype, device=gram.device)
        ridge = 1e-6 * gram.diagonal(dim1=1, dim2=2).mean(1).clamp(min=1e-12)
        chol = torch.linalg.cholesky(gram + ridge[:, None, None] * eye)
        x = torch.cholesky_solve(s.transpose(1, 2), chol)
        inv_c = torch.where(c > 0, 1 / c.clamp(min=1e-30), torch.zeros_like(c))
        tr = (s.transpose(1, 2) * x * inv_c[:, None, :]).sum((1, 2))
        loss = torch.where(z > 0, d - tr, torch.zeros_like(tr))
    return _reduce(loss, reduction)


def voice_activity_weights(magnitude, threshold_db=40.0, mask=None):
    """1 for bins within threshold_db of the item's maximum, else 0."""
    active = torch.ones_like(magnitude, dtype=torch.bool) if mask is None else mask
    mx = torch.where(active, magnitude, torch.zeros_like(magnitude)).amax(1, keepdim=True)
    keep = active & (magnitude > 0) & (magnitude >= mx * 10 ** (-threshold_db / 20))
    return keep.to(magnitude.dtype)


def magnitude_weights(magnitude, mask=None):
    """|X_i| / sum_j |X_j|, scaled so active weights average 1."""
    active = torch.ones_like(magnitude, dtype=torch.bool) if mask is None else mask
    m = torch.where(active, magnitude, torch.zeros_like(magnitude))
    total = m.sum(1, keepdim=True)
    return torch.where(total > 0, m * active.sum(1, keepdim=True) / total.clamp(min=1e-30), torch.zeros_like(m))
