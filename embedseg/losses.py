"""Deep-clustering training objectives, computed in low-rank form.

For embeddings ``V`` (n x dim, one row per element), a partition given as integer labels
``y`` (its one-hot matrix ``Y`` is n x C) and per-element weights ``w`` (``W = diag(w)``),
the affinity loss of Hershey et al. (2015, arXiv 1508.04306) is

    ||W^½ (V Vᵀ − Y Yᵀ) W^½||²_F = ||Vᵀ W V||² − 2·||Yᵀ W V||² + ||Yᵀ W Y||².

Every term on the right is small: ``VᵀWV`` is dim x dim, ``YᵀWV`` holds the weighted sum of
embeddings of each class (C x dim) and ``YᵀWY`` is diagonal (weighted class sizes). They are
gathered straight from the integer labels with an index-add, so neither the n x n affinity nor
a one-hot ``Y`` is ever formed: time O(n·dim²), extra memory O(dim² + C·dim) per item.

The gradient with respect to ``V`` is written by hand (:class:`_WeightedStats`): with
``A = VᵀWV`` and ``S = YᵀWV`` and upstream gradients ``G_A``, ``G_S``,

    dL/dv_i = w_i · (v_i (G_A + G_Aᵀ) + G_S[y_i]),

which for the affinity loss is ``4·w_i·(v_i A − S[y_i]) / (Σw)²``. The forward pass works
through the embeddings block by block and the gradient is built in place in its one output
tensor, so forward plus backward touch the embeddings about three times and never
materialize a weighted copy of them.

The weight helpers give the usual choices for spectrograms (Wang, Le Roux, Hershey 2018,
"Alternative objective functions for deep clustering"): binary voice activity and magnitude
ratio weights.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
from torch.autograd.function import once_differentiable

from ._validation import (
    check_choice,
    check_embeddings,
    check_float,
    check_labels,
    check_mask,
    check_tensor,
    check_weights,
    shape_str,
)
from .registry import Registry

__all__ = [
    "LOSSES",
    "register_loss",
    "get_loss",
    "list_losses",
    "affinity_loss",
    "whitened_kmeans_loss",
    "voice_activity_weights",
    "magnitude_weights",
]

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS = ("mean", "sum", "none")
_LOW_PRECISION = (torch.float16, torch.bfloat16)
# Rows of (batch, rows, dim) processed per block on the CPU: about 4 MiB of float32, so the
# weighted block stays in cache between the Gram update and the class sums, and no full-size
# temporary is allocated (fresh CPU memory costs a page fault per 4 KiB); benchmarks/RESULTS.md
# (Losses) has the block sizes measured. On accelerators the caching allocator makes
# temporaries cheap and kernel launches dominate: one block.
_BLOCK_ELEMENTS = 1 << 20


def _block_rows(batch: int, n: int, dim: int, device: torch.device) -> int:
    """Rows per block: about _BLOCK_ELEMENTS values per (batch, rows, dim) block on the CPU."""
    if device.type != "cpu":
        return n
    return max(1, min(n, _BLOCK_ELEMENTS // max(1, batch * dim)))


class _WeightedStats(torch.autograd.Function):
    """(V, w, keys) -> (VᵀWV per item, weighted class sums per key), with analytic backward.

    ``w`` None means every weight is 1 (no padding): then no weighted copy is needed at all.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor | None, keys: torch.Tensor, n_keys: int):
        batch, n, dim = x.shape
        with torch.autocast(x.device.type, enabled=False):
            sums = torch.zeros(n_keys, dim, dtype=x.dtype, device=x.device)  # (n_keys, dim)
            if w is None:
                gram = torch.bmm(x.transpose(1, 2), x)  # (batch, dim, dim)
                sums.index_add_(0, keys.reshape(-1), x.reshape(-1, dim))
            else:
                gram = torch.zeros(batch, dim, dim, dtype=x.dtype, device=x.device)
                rows = _block_rows(batch, n, dim, x.device)
                buf = torch.empty(batch * rows * dim, dtype=x.dtype, device=x.device)
                for start in range(0, n, rows):
                    stop = min(n, start + rows)
                    xs = x[:, start:stop]  # (batch, m, dim)
                    # A contiguous view of the reused buffer, also for a shorter last block.
                    wx = buf[: xs.numel()].view(xs.shape)  # (batch, m, dim)
                    torch.mul(xs, w[:, start:stop, None], out=wx)
                    gram.baddbmm_(xs.transpose(1, 2), wx)
                    sums.index_add_(0, keys[:, start:stop].reshape(-1), wx.view(-1, dim))
        ctx.save_for_backward(x, w, keys)
        ctx.n_keys = n_keys
        return gram, sums

    @staticmethod
    @once_differentiable
    def backward(ctx, g_gram: torch.Tensor | None, g_sums: torch.Tensor | None):
        x, w, keys = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        batch, n, dim = x.shape
        with torch.autocast(x.device.type, enabled=False):
            if g_gram is None:
                g_gram = torch.zeros(batch, dim, dim, dtype=x.dtype, device=x.device)
            if g_sums is None:
                g_sums = torch.zeros(ctx.n_keys, dim, dtype=x.dtype, device=x.device)
            sym = g_gram + g_gram.transpose(1, 2)  # (batch, dim, dim)
            # One pass, built in place in the output: blocks measured no faster here, and
            # fewer parallel regions fare better on a busy machine.
            grad = torch.empty(batch, n, dim, dtype=x.dtype, device=x.device)  # (batch, n, dim)
            torch.index_select(g_sums, 0, keys.reshape(-1), out=grad.view(-1, dim))
            grad.baddbmm_(x, sym)
            if w is not None:
                grad.mul_(w[..., None])
        return grad, None, None, None


def _weighted_stats_autograd(x: torch.Tensor, w: torch.Tensor, keys: torch.Tensor, n_keys: int):
    """Same as _WeightedStats with plain autograd ops; used when the weights need a gradient."""
    dim = x.shape[2]
    wx = x * w[..., None]  # (batch, n, dim)
    gram = torch.bmm(x.transpose(1, 2), wx)  # (batch, dim, dim)
    sums = torch.zeros(n_keys, dim, dtype=x.dtype, device=x.device).index_add(
        0, keys.reshape(-1), wx.reshape(-1, dim)
    )  # (n_keys, dim)
    return gram, sums


def _dense_labels(labels: torch.Tensor) -> torch.Tensor:
    """Renumber each item's label ids to 0..k-1 in sorted order (batched, via one sort)."""
    sorted_labels, order = labels.sort(dim=1)  # (batch, n)
    ranks = torch.zeros_like(labels)
    ranks[:, 1:] = (sorted_labels[:, 1:] != sorted_labels[:, :-1]).cumsum(1)
    return torch.empty_like(labels).scatter_(1, order, ranks)  # (batch, n)


def _check_inputs(
    embeddings, labels, weights, reduction: str, owner: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Validate the loss arguments; the costly finiteness check of embeddings comes later."""
    check_choice(reduction, "reduction", owner, _REDUCTIONS)
    embeddings = check_embeddings(embeddings, "embeddings", finite=False)
    labels = check_labels(labels, embeddings.shape[:2])
    if labels.device != embeddings.device:
        raise ValueError(
            f"'labels' must be on the device of 'embeddings' ({embeddings.device}). "
            f"Got a tensor on {labels.device} instead."
        )
    if weights is not None:
        # The device first: the value checks below would otherwise compare across devices.
        if isinstance(weights, torch.Tensor) and weights.device != embeddings.device:
            raise ValueError(
                f"'weights' must be on the device of 'embeddings' ({embeddings.device}). "
                f"Got a tensor on {weights.device} instead."
            )
        weights = check_weights(weights, embeddings.shape[:2])
    return embeddings, labels, weights


def _class_statistics(
    embeddings: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return VᵀWV (batch, dim, dim), YᵀWV (batch, C, dim), diag YᵀWY (batch, C), Σw (batch,).

    Computation is in float32 for half-precision inputs and in the input's dtype otherwise.
    Raises ValueError if the embeddings hold NaN or infinity.
    """
    batch, n, dim = embeddings.shape
    x = embeddings.float() if embeddings.dtype in _LOW_PRECISION else embeddings
    labels = labels.long()  # index arithmetic in int64 whatever the integer dtype given
    device, dtype = x.device, x.dtype

    # Classes are found per item: the buffer has one row per possible id of every item, and
    # ids that an item does not use stay empty (zero rows contribute nothing to any term).
    low, top = (int(t) for t in torch.aminmax(labels))
    # Every weight 1 (no weights, nothing ignored): no weight tensor is needed at all, which
    # saves the weighted copy and several passes over (batch, n).
    uniform = weights is None and low >= 0
    active = None if uniform else labels >= 0  # (batch, n)
    if top + 1 > n:
        # Sparse large ids (e.g. instance ids of an image): renumber per item, so that the
        # buffer never exceeds n rows per item.
        labels = _dense_labels(labels)
        top = int(labels.max())
    n_classes = max(top, 0) + 1
    n_keys = batch * n_classes
    offsets = torch.arange(batch, device=device)[:, None] * n_classes  # (batch, 1)

    if uniform:
        keys = labels + offsets  # (batch, n)
        gram, sums = _WeightedStats.apply(x, None, keys, n_keys)
        counts = torch.bincount(keys.reshape(-1), minlength=n_keys).to(dtype)  # (n_keys,)
        total = torch.full((batch,), n, dtype=dtype, device=device)  # (batch,)
    else:
        w = active.to(dtype) if weights is None else weights.to(dtype) * active  # (batch, n)
        keys = labels.clamp(min=0) + offsets  # (batch, n); ignored elements have zero weight
        if weights is not None and weights.requires_grad and torch.is_grad_enabled():
            gram, sums = _weighted_stats_autograd(x, w, keys, n_keys)
        else:
            gram, sums = _WeightedStats.apply(x, w.detach(), keys, n_keys)
        counts = torch.zeros(n_keys, dtype=dtype, device=device).index_add(
            0, keys.reshape(-1), w.reshape(-1)
        )  # (n_keys,)
        total = w.sum(1)  # (batch,)
    # Any NaN or infinity in the embeddings reaches the Gram matrix (0·inf is NaN too), so a
    # check of this small tensor replaces a full pass over the embeddings.
    if not bool(torch.isfinite(gram).all()):
        check_tensor(embeddings, "embeddings", finite=True)
    return gram, sums.view(batch, n_classes, dim), counts.view(batch, n_classes), total


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    """Apply the batch reduction to per-item losses (batch,)."""
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def affinity_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    r"""Weighted deep-clustering affinity loss (Hershey et al. 2015), in low-rank form.

    Per item, with ``w_i`` the weight of element ``i`` (zero where the label is negative),

    .. math::

        L = \frac{\sum_{ij} w_i w_j (v_i \cdot v_j - [y_i = y_j])^2}{(\sum_i w_i)^2}
          = \frac{\|V^T W V\|^2 - 2 \|Y^T W V\|^2 + \|Y^T W Y\|^2}{(\sum_i w_i)^2}.

    It is evaluated from the right-hand side, straight from the integer labels: no n x n
    matrix and no one-hot tensor. Label ids need not be contiguous (an item may use {0, 3});
    classes are found per item. The normalization by ``(Σ w)²`` makes the loss the mean
    squared affinity error over weighted pairs; an item without active weight has loss 0.

    Half-precision embeddings (e.g. under ``torch.autocast``) are accumulated in float32 and
    the loss is float32; their gradient comes back in their own dtype. Float64 stays float64.
    The weights are constants for the fast analytic gradient; if they require a gradient the
    loss falls back to plain autograd operations and differentiates through them too.

    Args:
        embeddings: element embeddings, usually unit-norm.
        labels: integer class of each element; a negative label marks an element to ignore
            (padding).
        weights: non-negative weight of each element (voice activity, magnitude, ...);
            None weighs every labelled element 1.
        reduction: ``"mean"`` over the batch, ``"sum"``, or ``"none"`` for one value per item.

    Returns:
        The loss: a scalar, or a (batch,) tensor with ``reduction="none"``.

    Raises:
        TypeError: if a tensor has the wrong kind (e.g. float labels).
        ValueError: on wrong shapes, NaN or infinite embeddings, negative weights, or an
            unknown reduction.

    Shape:
        - embeddings: (batch, n_points, dim)
        - labels: (batch, n_points), int64 (any integer dtype)
        - weights: (batch, n_points)
        - output: () or (batch,)

    Example:
        >>> import torch
        >>> v = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
        >>> affinity_loss(v, torch.tensor([[0, 0, 1]]))
        tensor(0.)
        >>> affinity_loss(v, torch.tensor([[0, 1, 1]]))  # 4 of 9 pairs off by 1
        tensor(0.4444)
    """
    embeddings, labels, weights = _check_inputs(
        embeddings, labels, weights, reduction, "affinity_loss"
    )
    with torch.autocast(embeddings.device.type, enabled=False):
        gram, sums, counts, total = _class_statistics(embeddings, labels, weights)
        num = (
            gram.square().sum((1, 2)) - 2 * sums.square().sum((1, 2)) + counts.square().sum(1)
        )  # (batch,)
        # num is exactly 0 when no weight is active, so dividing by 1 there gives loss 0.
        loss = num / torch.where(total > 0, total, torch.ones_like(total)).square()
    return _reduce(loss, reduction)


def whitened_kmeans_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    r"""Whitened k-means loss (Wang, Le Roux, Hershey 2018), in low-rank form.

    Per item, with ``W = diag(w)`` applied as ``W^½`` on the rows of ``V`` and ``Y``,

    .. math::

        L = D - \operatorname{tr}\big((V^T W V)^{-1}\, V^T W Y\, (Y^T W Y)^{-1}\, Y^T W V\big),

    where ``D`` is the embedding dimension. This is the k-means objective on whitened
    embeddings ``V (VᵀWV)^{-½}``: the trace term is the share of their (unit) variance that
    the class means explain, so ``L`` lies in ``[D − min(C, D), D]``, with C the number of
    classes the item uses, and needs no unit-norm embeddings. The loss is invariant to
    scaling ``w``, so no further normalization is applied; an item without active weight has
    loss 0 and classes without weight are left out of ``(YᵀWY)^{-1}``.

    ``(VᵀWV)^{-1}`` is applied by a Cholesky solve of ``VᵀWV + λI`` with a ridge
    ``λ = 100·eps·tr(VᵀWV)/D`` (``eps`` of the computation dtype), raised a thousandfold (up
    to twice) for an item whose factorization fails; this keeps rank-deficient embeddings
    (n < D, or collapsed directions) finite. Precision and weight handling are as in
    :func:`affinity_loss`.

    Args:
        embeddings: element embeddings.
        labels: integer class of each element; negative means ignore.
        weights: non-negative weight of each element; None weighs labelled elements 1.
        reduction: ``"mean"`` over the batch, ``"sum"``, or ``"none"`` for one value per item.

    Returns:
        The loss: a scalar, or a (batch,) tensor with ``reduction="none"``.

    Raises:
        TypeError: if a tensor has the wrong kind (e.g. float labels).
        ValueError: on wrong shapes, NaN or infinite embeddings, negative weights, or an
            unknown reduction.

    Shape:
        - embeddings: (batch, n_points, dim)
        - labels: (batch, n_points)
        - weights: (batch, n_points)
        - output: () or (batch,)

    Example:
        >>> import torch
        >>> v = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
        >>> round(float(whitened_kmeans_loss(v, torch.tensor([[0, 0, 1]]))), 6)
        0.0
    """
    embeddings, labels, weights = _check_inputs(
        embeddings, labels, weights, reduction, "whitened_kmeans_loss"
    )
    dim = embeddings.shape[2]
    with torch.autocast(embeddings.device.type, enabled=False):
        gram, sums, counts, total = _class_statistics(embeddings, labels, weights)
        dtype, device = gram.dtype, gram.device
        eye = torch.eye(dim, dtype=dtype, device=device)
        live = total > 0  # (batch,)
        # Items without weight get the identity, so that no 1/0 enters the graph at all.
        gram = torch.where(live[:, None, None], gram, eye)  # (batch, dim, dim)
        scale = gram.diagonal(dim1=1, dim2=2).mean(1).detach()  # (batch,)
        finfo = torch.finfo(dtype)
        ridge = 100 * finfo.eps * scale + finfo.tiny  # (batch,)
        for _ in range(3):
            chol, info = torch.linalg.cholesky_ex(gram + ridge[:, None, None] * eye)
            failed = info > 0  # (batch,)
            if not bool(failed.any()):
                break
            ridge = torch.where(failed, 1e3 * ridge, ridge)
        solved = torch.cholesky_solve(sums.transpose(1, 2), chol)  # (batch, dim, C)
        inv_counts = torch.where(
            counts > 0, 1 / torch.where(counts > 0, counts, torch.ones_like(counts)), 0.0
        )  # (batch, C)
        explained = (sums.transpose(1, 2) * solved * inv_counts[:, None, :]).sum((1, 2))
        loss = torch.where(live, dim - explained, torch.zeros_like(explained))  # (batch,)
    return _reduce(loss, reduction)


#: the embedding losses by the names the trainer and the domains use.
#: the embedding losses the trainer knows by name. A loss is called as
#: ``fn(embeddings (batch, n_points, dim), labels (batch, n_points) with -1 = ignore,
#: weights (batch, n_points) or None, reduction="mean" | "sum" | "none")`` and returns a scalar,
#: or one value per item with ``reduction="none"``.
LOSSES: Registry[Callable[..., torch.Tensor]] = Registry("loss")


def register_loss(name: str, fn: Callable[..., torch.Tensor] | None = None, *, override: bool = False):
    """Register an embedding loss under ``name`` (decorator or call), so that
    ``embedseg.fit(..., loss=name)`` trains with it. A duplicate name is an error unless
    ``override=True``.

    Example:
        >>> import embedseg
        >>> @embedseg.register_loss("affinity-x2")
        ... def doubled(embeddings, labels, weights=None, reduction="mean"):
        ...     return 2 * embedseg.affinity_loss(embeddings, labels, weights, reduction=reduction)
        >>> "affinity-x2" in embedseg.list_losses()
        True
        >>> LOSSES.unregister("affinity-x2")
    """

    def add(target: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        if not callable(target):
            raise TypeError(f"register_loss() expects a callable loss. Got {target!r} instead.")
        LOSSES.register(name, target, override=override)
        return target

    return add if fn is None else add(fn)


def list_losses() -> list[str]:
    """Names of the registered losses, sorted."""
    return LOSSES.names()


def get_loss(name: str, owner: str = "fit") -> Callable[..., torch.Tensor]:
    """The loss registered as ``name``; the error names ``owner``'s 'loss' parameter and lists
    the valid names."""
    check_choice(name, "loss", owner, LOSSES.names())
    return LOSSES.get(name)


register_loss("affinity", affinity_loss)
register_loss("whitened_kmeans", whitened_kmeans_loss)


def _check_magnitude(magnitude, owner: str) -> torch.Tensor:
    """Check a (batch, n_points) finite non-negative floating magnitude."""
    magnitude = check_tensor(
        magnitude, "magnitude", ndim=2, floating=True, finite=True, what="(batch, n_points)"
    )
    if bool((magnitude < 0).any()):
        raise ValueError(
            f"'magnitude' of {owner} must be >= 0 (a linear magnitude). Got "
            f"{shape_str(magnitude)} with minimum {float(magnitude.min()):g}."
        )
    return magnitude


def voice_activity_weights(
    magnitude: torch.Tensor, threshold_db: float = 40.0, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Binary weights keeping the bins within ``threshold_db`` of each item's loudest bin.

    A bin is active when ``20·log10(|X_i|) >= 20·log10(max_j |X_j|) − threshold_db``, the
    maximum taken over the item's active bins (Hershey et al. 2015 use 40 dB). A bin of zero
    magnitude is never active, so an all-silent item gets no weight; masked-out (padding)
    bins get 0.

    Args:
        magnitude: linear magnitude of each bin.
        threshold_db: how far below the maximum a bin may lie, in dB, >= 0; ``inf`` keeps
            every bin of non-zero magnitude.
        mask: True for real bins, False for padding; None means all bins are real.

    Returns:
        Weights in {0, 1}, in the dtype of ``magnitude``.

    Raises:
        TypeError: if ``magnitude`` is not a floating tensor or ``mask`` not boolean.
        ValueError: on a wrong shape, negative or non-finite magnitude, or a negative
            threshold.

    Shape:
        - magnitude: (batch, n_points)
        - mask: (batch, n_points)
        - output: (batch, n_points)

    Example:
        >>> import torch
        >>> voice_activity_weights(torch.tensor([[1.0, 0.1, 0.001, 0.0]]), threshold_db=40.0)
        tensor([[1., 1., 0., 0.]])
    """
    magnitude = _check_magnitude(magnitude, "voice_activity_weights")
    threshold_db = check_float(threshold_db, "threshold_db", "voice_activity_weights", low=0.0, allow_inf=True)
    mask = check_mask(mask, magnitude.shape, magnitude.device)
    masked = magnitude.masked_fill(~mask, 0)  # (batch, n)
    floor = masked.amax(1, keepdim=True) * 10.0 ** (-threshold_db / 20.0)  # (batch, 1)
    return (mask & (masked > 0) & (masked >= floor)).to(magnitude.dtype)


def magnitude_weights(magnitude: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Magnitude-ratio weights (Wang et al. 2018), scaled to average 1 over active bins.

    ``w_i = |X_i| / Σ_j |X_j| · n_active``, the sum over the item's active bins, so loud bins
    count more and the weights of an item average 1 over its active bins. Masked-out bins and
    an all-silent item get weight 0.

    Args:
        magnitude: linear magnitude of each bin.
        mask: True for real bins, False for padding; None means all bins are real.

    Returns:
        Non-negative weights in the dtype of ``magnitude``.

    Raises:
        TypeError: if ``magnitude`` is not a floating tensor or ``mask`` not boolean.
        ValueError: on a wrong shape or a negative or non-finite magnitude.

    Shape:
        - magnitude: (batch, n_points)
        - mask: (batch, n_points)
        - output: (batch, n_points)

    Example:
        >>> import torch
        >>> magnitude_weights(torch.tensor([[3.0, 1.0, 0.0, 0.0]]))
        tensor([[3., 1., 0., 0.]])
    """
    magnitude = _check_magnitude(magnitude, "magnitude_weights")
    mask = check_mask(mask, magnitude.shape, magnitude.device)
    masked = magnitude.masked_fill(~mask, 0)  # (batch, n)
    total = masked.sum(1, keepdim=True)  # (batch, 1)
    n_active = mask.sum(1, keepdim=True).to(magnitude.dtype)  # (batch, 1)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return masked * (n_active / safe)
