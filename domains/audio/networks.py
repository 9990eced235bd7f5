"""Embedding networks for spectrograms: the paper's BLSTM and a compact CPU-friendly variant,
a dilated temporal convolutional network, and a convolutional front-end before a small BLSTM,
each optionally with a Chimera++ mask-inference head (Wang, Le Roux, Hershey 2018) and a
source-counting head (:class:`CountHead`).

Input: features (batch, frames, freqs). Output: unit-norm embeddings (batch, frames * freqs,
dim) for bin index ``frame * freqs + freq``; with a mask or count head, a dict
``{"embeddings": ..., "masks": (batch, n_masks, frames, freqs), "counts": (batch, max_count)}``
holding the heads the network has.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from embedseg._validation import check_float, check_int
from embedseg.networks import normalize_embeddings, register_network

__all__ = [
    "BLSTMEmbedding", "CompactBLSTMEmbedding", "ConvBLSTMEmbedding", "CountHead", "DilatedConvEmbedding",
    "FrameAttention", "widen_blstm", "with_attention", "with_count_head",
]


def _check_features(features: torch.Tensor, n_freqs: int) -> None:
    """Reject features whose frequency axis does not match the network's."""
    if features.ndim != 3 or features.shape[-1] != n_freqs:
        raise ValueError(
            f"'features' must have {n_freqs} frequency bins (batch, frames, freqs). Got shape "
            f"{tuple(features.shape)}."
        )


def _heads_output(
    embed: torch.Tensor, mask_logits: torch.Tensor | None, dim: int, mask_sources: int,
    count_logits: torch.Tensor | None = None,
) -> Any:
    """Unit-norm embeddings (tanh, then norm), plus Chimera++ masks when there is a mask head
    and count logits when there is a count head.

    Shape:
        embed (batch, frames, freqs * dim), mask_logits (batch, frames, freqs * C),
        count_logits (batch, K) -> embeddings (batch, frames * freqs, dim), masks (batch, C,
        frames, freqs), counts (batch, K).
    """
    b, t, _ = embed.shape
    v = normalize_embeddings(torch.tanh(embed).reshape(b, -1, dim))  # (batch, frames * freqs, dim)
    if mask_logits is None and count_logits is None:
        return v
    out: dict[str, torch.Tensor] = {"embeddings": v}
    if mask_logits is not None:
        logits = mask_logits.reshape(b, t, -1, mask_sources)  # (batch, frames, freqs, C)
        out["masks"] = torch.softmax(logits.float(), dim=-1).permute(0, 3, 1, 2)  # (batch, C, frames, freqs)
    if count_logits is not None:
        out["counts"] = count_logits.float()
    return out


class CountHead(nn.Module):
    """How many talkers a mixture holds, from a network's per-frame features: a per-frame
    projection, attentive statistics pooling over frames (Okabe et al. 2018: an attention-
    weighted mean and standard deviation, so that silent frames can weigh nothing), and a
    linear classifier over 1..``max_count`` sources.

    Deep clustering's own way of counting, choosing the k whose clustering of the embeddings
    fits best, needs embeddings in which every talker takes its own direction; a network trained
    on 2-talker mixtures with a 2-mask head codes "first" and "second" talker in one shared
    plane instead, so that no clustering criterion sees a third (benchmarks/RESULTS.md). The
    network's frames still hold what tells 2 talkers from 3, and this head reads it; the
    embeddings are then clustered into that many sources. Every frame it is given enters the
    pooling, padding included, as the BLSTM sees it: ``evaluate`` and ``separate`` batch mixtures of
    one length.

    Args:
        in_features: features per frame.
        max_count: the largest count told apart (class ``i`` is ``i + 1`` sources).
        hidden: width of the per-frame projection.

    Shape:
        (batch, frames, in_features) -> logits (batch, max_count).
    """

    def __init__(self, in_features: int, max_count: int, hidden: int = 64) -> None:
        super().__init__()
        owner = type(self).__name__
        self.max_count = check_int(max_count, "max_count", owner, 2)
        check_int(in_features, "in_features", owner, 1)
        check_int(hidden, "hidden", owner, 1)
        self.frame = nn.Linear(in_features, hidden)
        self.attention = nn.Linear(in_features, 1)
        self.classify = nn.Linear(2 * hidden, max_count)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = torch.relu(self.frame(h))  # (batch, frames, hidden)
        dtype = torch.promote_types(z.dtype, torch.float32)  # statistics at least in float32
        z = z.to(dtype)
        weights = torch.softmax(self.attention(h).to(dtype), dim=1)  # (batch, frames, 1)
        mean = (weights * z).sum(1)
        var = (weights * z * z).sum(1) - mean * mean
        std = var.clamp_min(1e-6).sqrt()  # floored: the gradient of sqrt at 0 is infinite
        stats = torch.cat([mean, std], dim=-1).to(self.classify.weight.dtype)
        return self.classify(stats)  # (batch, max_count)


def _count_head(net: nn.Module, in_features: int, count_sources: int) -> CountHead | None:
    """Check ``count_sources`` (0: no head) and build the count head for ``in_features``."""
    net.count_sources = check_int(count_sources, "count_sources", type(net).__name__, 0)
    if count_sources == 1:
        raise ValueError(
            f"The 'count_sources' parameter of {type(net).__name__} must be 0 (no count head) or at least 2. Got 1."
        )
    return CountHead(in_features, count_sources) if count_sources else None


class FrameAttention(nn.Module):
    """A pre-norm Transformer encoder layer over frames (Vaswani et al. 2017): multi-head
    self-attention, then a feed-forward layer, each added back to its input.

    A BLSTM's state fades over a few seconds, so on long mixtures its embeddings may hand a
    talker from one cluster to the other (separated locally, swapped over time). Attention
    lets every frame read every other frame of the mixture directly, whatever their distance,
    and without positional encoding it reads them by content: frames of one voice can pull
    each other together across the whole utterance.

    Both residual branches end in a zero-initialized linear layer, so a new block computes the
    identity: added to a trained network (:func:`with_attention`), it starts from that
    network's outputs exactly.

    Args:
        features: features per frame (divisible by ``heads``).
        heads: attention heads.
        dropout: dropout on the attention weights and the feed-forward layer (training only).

    Shape:
        (batch, frames, features) -> (batch, frames, features).
    """

    def __init__(self, features: int, heads: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        owner = type(self).__name__
        check_int(features, "features", owner, 1)
        self.heads = check_int(heads, "heads", owner, 1)
        if features % heads:
            raise ValueError(
                f"The 'features' parameter of {owner} must be divisible by 'heads' ({heads}). Got {features}."
            )
        self.dropout = check_float(dropout, "dropout", owner, 0.0, 1.0, closed="left")
        self.attn_norm = nn.LayerNorm(features)
        self.qkv = nn.Linear(features, 3 * features)
        self.attn_out = nn.Linear(features, features)
        self.ff_norm = nn.LayerNorm(features)
        self.ff_in = nn.Linear(features, 2 * features)
        self.ff_out = nn.Linear(2 * features, features)
        for last in (self.attn_out, self.ff_out):  # identity at the start
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t, f = h.shape
        q, k, v = self.qkv(self.attn_norm(h)).reshape(b, t, 3, self.heads, f // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        # the fused kernel never builds the frames x frames matrix, so memory stays linear in frames
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (batch, heads, frames, f / heads)
        h = h + self.attn_out(a.transpose(1, 2).reshape(b, t, f))
        ff = F.dropout(F.gelu(self.ff_in(self.ff_norm(h))), p, self.training)
        return h + self.ff_out(ff)


def _attention(net: nn.Module, features: int, layers: int, heads: int, dropout: float) -> nn.Sequential | None:
    """Check ``attention_layers`` / ``attention_heads`` and build that many :class:`FrameAttention`
    layers (0: none)."""
    owner = type(net).__name__
    net.attention_layers = check_int(layers, "attention_layers", owner, 0)
    net.attention_heads = check_int(heads, "attention_heads", owner, 1)
    if not layers:
        return None
    if features % heads:
        raise ValueError(
            f"The 'attention_heads' parameter of {owner} must divide the BLSTM's {features} output features. "
            f"Got {heads}."
        )
    return nn.Sequential(*[FrameAttention(features, heads, dropout) for _ in range(layers)])


@register_network("dc_blstm")
class BLSTMEmbedding(nn.Module):
    """Deep clustering's BLSTM (Hershey et al. 2015): stacked bidirectional LSTMs over frames,
    then a per-frame linear map to ``freqs * dim`` values, tanh and unit norm per bin.

    The paper's configuration is 2 layers of 300 units per direction (later work: 4 x 600),
    embedding dimension 20 to 40.

    Args:
        n_freqs: frequency bins per frame (129 for a 256-point FFT).
        dim: embedding dimension.
        hidden: LSTM units per direction.
        layers: stacked BLSTM layers.
        dropout: dropout between layers (training only).
        mask_sources: with > 0, a Chimera++ mask-inference head giving that many softmax
            masks per bin, trained jointly with the embeddings.
        count_sources: with > 0, a :class:`CountHead` over the BLSTM's frames that tells
            1..count_sources talkers apart.
        attention_layers: :class:`FrameAttention` layers over the BLSTM's frames, before the
            embedding and mask heads (the count head reads the BLSTM itself).
        attention_heads: heads of each attention layer.

    Shape:
        features (batch, frames, n_freqs) -> embeddings (batch, frames * n_freqs, dim).

    Example:
        >>> net = BLSTMEmbedding(n_freqs=129, dim=20, hidden=32, layers=1)
        >>> net(torch.zeros(2, 10, 129)).shape
        torch.Size([2, 1290, 20])
    """

    def __init__(
        self,
        *,
        n_freqs: int = 129,
        dim: int = 40,
        hidden: int = 300,
        layers: int = 2,
        dropout: float = 0.3,
        mask_sources: int = 0,
        count_sources: int = 0,
        attention_layers: int = 0,
        attention_heads: int = 4,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.n_freqs = check_int(n_freqs, "n_freqs", owner, 1)
        self.dim = check_int(dim, "dim", owner, 2)
        self.hidden = check_int(hidden, "hidden", owner, 1)
        self.layers = check_int(layers, "layers", owner, 1)
        self.dropout = check_float(dropout, "dropout", owner, 0.0, 1.0, closed="left")
        self.mask_sources = check_int(mask_sources, "mask_sources", owner, 0)
        self.blstm = nn.LSTM(
            n_freqs, hidden, num_layers=layers, batch_first=True, bidirectional=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.attention = _attention(self, 2 * hidden, attention_layers, attention_heads, dropout)
        self.drop = nn.Dropout(dropout)
        self.embed = nn.Linear(2 * hidden, n_freqs * dim)
        self.mask_head = nn.Linear(2 * hidden, n_freqs * mask_sources) if mask_sources else None
        self.count_head = _count_head(self, 2 * hidden, count_sources)

    def forward(self, features: torch.Tensor) -> Any:
        _check_features(features, self.n_freqs)
        h, _ = self.blstm(features)  # (batch, frames, 2 * hidden)
        counts = None if self.count_head is None else self.count_head(h)
        if self.attention is not None:
            h = self.attention(h)
        h = self.drop(h)
        masks = None if self.mask_head is None else self.mask_head(h)
        return _heads_output(self.embed(h), masks, self.dim, self.mask_sources, counts)


def widen_blstm(network: BLSTMEmbedding, hidden: int, *, seed: int = 0, scale: float = 0.01) -> BLSTMEmbedding:
    """A copy of ``network`` with ``hidden`` LSTM units per direction that computes the same
    outputs (Net2Net-style widening, Chen et al. 2016), so a trained model can grow in capacity
    and go on training from where it is instead of from random weights.

    The old units keep their weights. Each new unit has zero input, recurrent and bias weights:
    its gates sit at 0.5 and its candidate at 0, so its cell and output stay exactly 0 on any
    input, and whatever reads it (the old units' recurrent weights, the next layer, the heads)
    gets random weights of standard deviation ``scale`` that change no output but let the
    gradient reach the new unit from the first step; the random values differ per unit, which
    breaks the symmetry between new units.

    Args:
        network: a :class:`BLSTMEmbedding` (or subclass, such as ``dc_compact``).
        hidden: LSTM units per direction of the copy, at least the network's.
        seed: seed of the new reading weights.
        scale: their standard deviation.

    Raises:
        TypeError: ``network`` is not a BLSTMEmbedding.
        ValueError: ``hidden`` is smaller than the network's.
    """
    if not isinstance(network, BLSTMEmbedding):
        raise TypeError(f"'network' must be a BLSTMEmbedding (dc_blstm, dc_compact). Got {type(network).__name__}.")
    old = network.hidden
    check_int(hidden, "hidden", "widen_blstm", old)
    check_float(scale, "scale", "widen_blstm", 0.0)
    if getattr(network, "count_head", None) is not None or getattr(network, "attention", None) is not None:
        raise ValueError(
            "'network' has a count head or attention layers, which read the BLSTM's frames and would not keep "
            "their outputs when they widen: widen the network first, then add them (with_count_head, with_attention)."
        )
    wide = type(network)(n_freqs=network.n_freqs, dim=network.dim, hidden=hidden, layers=network.layers,
                         dropout=network.dropout, mask_sources=network.mask_sources)
    like = next(network.parameters())
    wide = wide.to(device=like.device, dtype=like.dtype)
    gen = torch.Generator().manual_seed(int(seed))

    def fresh(shape: tuple[int, ...], target: torch.Tensor) -> torch.Tensor:
        return (torch.randn(shape, generator=gen, dtype=torch.float32) * scale).to(target)

    # position of each old hidden value in the wide one: forward units first, then backward
    keep = torch.cat([torch.arange(old), hidden + torch.arange(old)])
    rows = torch.cat([g * hidden + torch.arange(old) for g in range(4)])  # gates i, f, g, o
    wide_state, state = wide.state_dict(), network.state_dict()
    for name, value in state.items():
        target = wide_state[name]
        if name.startswith("blstm.weight_ih_l0"):  # the first layer reads the features
            new = torch.zeros_like(target)
            new[rows] = value
        elif name.startswith("blstm.weight_ih"):  # a later layer reads both directions below
            new = torch.zeros_like(target)
            new[rows] = fresh((len(rows), target.shape[1]), target)
            new[rows[:, None], keep[None, :]] = value
        elif name.startswith("blstm.weight_hh"):
            new = torch.zeros_like(target)
            new[rows] = fresh((len(rows), hidden), target)
            new[rows[:, None], torch.arange(old)[None, :]] = value
        elif name.startswith("blstm.bias"):
            new = torch.zeros_like(target)
            new[rows] = value
        elif name.endswith(".weight"):  # a head: Linear(2 * hidden -> ...)
            new = fresh(tuple(target.shape), target)
            new[:, keep] = value
        else:  # a head's bias
            new = value.clone()
        wide_state[name] = new
    wide.load_state_dict(wide_state)
    return wide


@register_network("dc_compact")
class CompactBLSTMEmbedding(BLSTMEmbedding):
    """The CPU-friendly default: the same architecture, 2 x 160 BLSTM units, dimension 20.

    About 5x fewer operations per frame than :class:`BLSTMEmbedding`'s defaults, so it trains
    in minutes on a laptop and separates far faster than real time on two CPU cores.
    """

    def __init__(
        self,
        *,
        n_freqs: int = 129,
        dim: int = 20,
        hidden: int = 160,
        layers: int = 2,
        dropout: float = 0.2,
        mask_sources: int = 0,
        count_sources: int = 0,
        attention_layers: int = 0,
        attention_heads: int = 4,
    ) -> None:
        super().__init__(
            n_freqs=n_freqs, dim=dim, hidden=hidden, layers=layers, dropout=dropout, mask_sources=mask_sources,
            count_sources=count_sources, attention_layers=attention_layers, attention_heads=attention_heads,
        )


class _ConvBlock(nn.Module):
    """Dilated residual block: conv over time, PReLU, layer norm over channels per frame."""

    def __init__(self, channels: int, dilation: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2)
        self.act = nn.PReLU(channels)
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv(x))  # (batch, channels, frames)
        return x + self.norm(y.transpose(1, 2)).transpose(1, 2)


def _dilated_front(
    net: nn.Module, *, n_freqs: int, dim: int, channels: int, blocks: int, kernel: int, mask_sources: int, repeats: int = 1
) -> None:
    """Check and store the options of a network with a dilated convolutional front-end over
    frames, and build it: ``net.inp`` (frequencies -> channels) and ``net.body`` (``blocks``
    residual blocks of dilations 1, 2, 4, ..., ``repeats`` times)."""
    owner = type(net).__name__
    net.n_freqs = check_int(n_freqs, "n_freqs", owner, 1)
    net.dim = check_int(dim, "dim", owner, 2)
    net.channels = check_int(channels, "channels", owner, 1)
    net.blocks = check_int(blocks, "blocks", owner, 1)
    net.kernel = check_int(kernel, "kernel", owner, 1)
    if kernel % 2 == 0:
        raise ValueError(f"The 'kernel' parameter of {owner} must be an odd int. Got {kernel} instead.")
    net.mask_sources = check_int(mask_sources, "mask_sources", owner, 0)
    net.inp = nn.Conv1d(n_freqs, channels, 1)
    net.body = nn.Sequential(*[_ConvBlock(channels, 2**i, kernel) for _ in range(repeats) for i in range(blocks)])


@register_network("dc_tcn")
class DilatedConvEmbedding(nn.Module):
    """A non-causal temporal convolutional network (dilated residual 1-D convolutions over
    frames, frequency bins as input channels), then the same per-bin tanh + unit-norm head.

    Convolutions run as large matrix products over all frames at once, so on CPU this trains
    and infers several times faster than a BLSTM of similar size, with a receptive field of
    ``1 + repeats * (kernel - 1) * sum(2**i for i < blocks)`` frames (253 frames, 2 s, by
    default).

    Args:
        n_freqs: frequency bins per frame.
        dim: embedding dimension.
        channels: width of the residual stream.
        blocks: dilated blocks per repeat (dilations 1, 2, 4, ...).
        repeats: repeats of the dilation cycle.
        kernel: temporal kernel size (odd).
        mask_sources: with > 0, a Chimera++ mask-inference head with that many masks.
        count_sources: with > 0, a :class:`CountHead` over the residual stream.

    Shape:
        features (batch, frames, n_freqs) -> embeddings (batch, frames * n_freqs, dim).

    Example:
        >>> net = DilatedConvEmbedding(n_freqs=129, dim=20, channels=16, blocks=2, repeats=1)
        >>> net(torch.zeros(2, 10, 129)).shape
        torch.Size([2, 1290, 20])
    """

    def __init__(
        self,
        *,
        n_freqs: int = 129,
        dim: int = 20,
        channels: int = 192,
        blocks: int = 6,
        repeats: int = 2,
        kernel: int = 3,
        mask_sources: int = 0,
        count_sources: int = 0,
    ) -> None:
        super().__init__()
        self.repeats = check_int(repeats, "repeats", type(self).__name__, 1)
        _dilated_front(
            self, n_freqs=n_freqs, dim=dim, channels=channels, blocks=blocks, kernel=kernel, mask_sources=mask_sources,
            repeats=repeats,
        )
        self.embed = nn.Conv1d(channels, n_freqs * dim, 1)
        self.mask_head = nn.Conv1d(channels, n_freqs * mask_sources, 1) if mask_sources else None
        self.count_head = _count_head(self, channels, count_sources)

    def forward(self, features: torch.Tensor) -> Any:
        _check_features(features, self.n_freqs)
        h = self.body(self.inp(features.transpose(1, 2)))  # (batch, channels, frames)
        masks = None if self.mask_head is None else self.mask_head(h).transpose(1, 2)
        counts = None if self.count_head is None else self.count_head(h.transpose(1, 2))
        return _heads_output(self.embed(h).transpose(1, 2), masks, self.dim, self.mask_sources, counts)


@register_network("dc_conv_blstm")
class ConvBLSTMEmbedding(nn.Module):
    """A convolutional front-end (dilated residual 1-D convolutions over frames, as in
    :class:`DilatedConvEmbedding`) before a small BLSTM, then the per-bin tanh + unit-norm head.

    The convolutions see the local spectro-temporal pattern cheaply (large matrix products over
    all frames at once); the BLSTM, narrower than :class:`CompactBLSTMEmbedding`'s, carries a
    talker's identity across the whole utterance, which the convolutions' finite receptive field
    cannot.

    Args:
        n_freqs: frequency bins per frame.
        dim: embedding dimension.
        channels: width of the convolutional stream.
        blocks: dilated residual blocks (dilations 1, 2, 4, ...).
        kernel: temporal kernel size (odd).
        hidden: LSTM units per direction.
        layers: stacked BLSTM layers.
        dropout: dropout after the BLSTM (training only).
        mask_sources: with > 0, a Chimera++ mask-inference head with that many masks.
        count_sources: with > 0, a :class:`CountHead` over the BLSTM's frames.

    Shape:
        features (batch, frames, n_freqs) -> embeddings (batch, frames * n_freqs, dim).

    Example:
        >>> net = ConvBLSTMEmbedding(n_freqs=129, dim=20, channels=16, blocks=2, hidden=8)
        >>> net(torch.zeros(2, 10, 129)).shape
        torch.Size([2, 1290, 20])
    """

    def __init__(
        self,
        *,
        n_freqs: int = 129,
        dim: int = 20,
        channels: int = 256,
        blocks: int = 4,
        kernel: int = 3,
        hidden: int = 128,
        layers: int = 1,
        dropout: float = 0.1,
        mask_sources: int = 0,
        count_sources: int = 0,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.hidden = check_int(hidden, "hidden", owner, 1)
        self.layers = check_int(layers, "layers", owner, 1)
        self.dropout = check_float(dropout, "dropout", owner, 0.0, 1.0, closed="left")
        _dilated_front(self, n_freqs=n_freqs, dim=dim, channels=channels, blocks=blocks, kernel=kernel, mask_sources=mask_sources)
        self.blstm = nn.LSTM(
            channels, hidden, num_layers=layers, batch_first=True, bidirectional=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(dropout)
        self.embed = nn.Linear(2 * hidden, n_freqs * dim)
        self.mask_head = nn.Linear(2 * hidden, n_freqs * mask_sources) if mask_sources else None
        self.count_head = _count_head(self, 2 * hidden, count_sources)

    def forward(self, features: torch.Tensor) -> Any:
        _check_features(features, self.n_freqs)
        c = self.body(self.inp(features.transpose(1, 2)))  # (batch, channels, frames)
        h, _ = self.blstm(c.transpose(1, 2))  # (batch, frames, 2 * hidden)
        counts = None if self.count_head is None else self.count_head(h)
        h = self.drop(h)
        masks = None if self.mask_head is None else self.mask_head(h)
        return _heads_output(self.embed(h), masks, self.dim, self.mask_sources, counts)


def _grown(network: nn.Module, params: dict[str, Any], new_prefix: str, seed: int) -> nn.Module:
    """A copy of ``network`` built with ``params`` added to its own: every weight of ``network``,
    and new parts (under ``new_prefix``) drawn from ``seed``."""
    from embedseg.model import network_config
    from embedseg.networks import create_network

    config = network_config(network)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        grown = create_network(config["name"], **{**config["params"], **params})
    missing, unexpected = grown.load_state_dict(network.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(new_prefix) for k in missing), (missing, unexpected)
    return grown.to(next(network.parameters()).device).train(network.training)


def with_count_head(network: nn.Module, max_count: int, *, seed: int = 0) -> nn.Module:
    """A copy of an audio ``network`` with a new :class:`CountHead` (1..``max_count`` sources,
    weights drawn from ``seed``) and every other weight of ``network``: the embeddings and
    masks are unchanged, so a trained model learns to count without separating any worse
    (train the head alone by freezing the rest).

    Raises:
        TypeError: ``network`` is not one of this module's networks.
        ValueError: ``network`` already has a count head, or ``max_count`` is below 2.
    """
    known = (BLSTMEmbedding, DilatedConvEmbedding, ConvBLSTMEmbedding)
    if not isinstance(network, known):
        raise TypeError(
            f"'network' must be one of {[c.__name__ for c in known]}. Got {type(network).__name__}."
        )
    if getattr(network, "count_head", None) is not None:
        raise ValueError("'network' already has a count head.")
    check_int(max_count, "max_count", "with_count_head", 2)
    return _grown(network, {"count_sources": max_count}, "count_head.", seed)


def with_attention(network: nn.Module, layers: int, *, heads: int = 4, seed: int = 0) -> nn.Module:
    """A copy of a BLSTM ``network`` with ``layers`` new :class:`FrameAttention` layers after its
    BLSTM (weights drawn from ``seed``) and every weight of ``network``. A new layer computes the
    identity, so the copy's embeddings, masks and counts are exactly the network's: a trained
    model gains whole-utterance context and goes on training from where it is.

    Raises:
        TypeError: ``network`` is not a BLSTMEmbedding (dc_blstm, dc_compact).
        ValueError: ``network`` already has attention layers, ``layers`` is below 1, or
            ``heads`` does not divide the BLSTM's output features.
    """
    if not isinstance(network, BLSTMEmbedding):
        raise TypeError(f"'network' must be a BLSTMEmbedding (dc_blstm, dc_compact). Got {type(network).__name__}.")
    if network.attention is not None:
        raise ValueError(f"'network' already has {network.attention_layers} attention layers.")
    check_int(layers, "layers", "with_attention", 1)
    return _grown(network, {"attention_layers": layers, "attention_heads": heads}, "attention.", seed)
