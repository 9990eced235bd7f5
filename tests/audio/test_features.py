"""STFT, features, targets and mask decoding of the audio domain."""

import numpy as np
import pytest
import torch

from domains.audio.features import (
    STFTConfig,
    apply_masks,
    frame_mask,
    ideal_binary_labels,
    ideal_ratio_masks,
    istft,
    log_magnitude_features,
    masks_from_labels,
    masks_from_proba,
    n_frames,
    stft,
)

CFG = STFTConfig()


def _numpy_stft(x: np.ndarray, cfg: STFTConfig) -> np.ndarray:
    """Direct float64 STFT: centered frames, zero padding, sqrt-Hann window."""
    n = cfg.n_fft
    w = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n))
    xp = np.pad(x, (n // 2, n // 2))
    frames = 1 + len(x) // cfg.hop_length
    k = np.arange(n // 2 + 1)
    basis = np.exp(-2j * np.pi * np.outer(np.arange(n), k) / n)  # (n, freqs)
    return np.stack([(xp[t * cfg.hop_length : t * cfg.hop_length + n] * w) @ basis for t in range(frames)])


def test_stft_matches_direct_dft():
    x = np.random.default_rng(0).standard_normal(1000)
    ours = stft(torch.tensor(x, dtype=torch.float32)[None], CFG)[0].numpy()
    ref = _numpy_stft(x, CFG)
    assert ours.shape == (n_frames(1000, CFG), CFG.n_freqs) == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-3)


@pytest.mark.parametrize("length", [129, 1000, 8000, 8001])
def test_istft_reconstructs_exact_length(length):
    x = torch.randn(2, length, generator=torch.Generator().manual_seed(length))
    y = istft(stft(x, CFG), length, CFG)
    assert y.shape == x.shape
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)


def test_stft_rejects_too_short_input():
    with pytest.raises(ValueError, match="'wave' must be at least 129 samples"):
        stft(torch.zeros(1, 100), CFG)


def test_stft_config_validates():
    with pytest.raises(ValueError, match="'window' parameter of STFTConfig"):
        STFTConfig(window="boxcar")
    with pytest.raises(ValueError, match="'hop_length'"):
        STFTConfig(hop_length=512)
    assert STFTConfig().n_freqs == 129


def test_frame_mask_hand_case():
    m = frame_mask(torch.tensor([64, 200]), frames=4, config=CFG, n_freqs=2)
    # 1 + 64 // 64 = 2 frames, 1 + 200 // 64 = 4 frames
    expected = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(m, expected)


def test_log_magnitude_is_normalized_and_ignores_padding():
    g = torch.Generator().manual_seed(1)
    short = torch.randn(1, 3000, generator=g)
    padded = torch.cat([torch.cat([short, torch.zeros(1, 2000)], 1), torch.randn(1, 5000, generator=g)])
    spec = stft(padded, CFG)  # (2, frames, freqs)
    b, t, f = spec.shape
    mask = frame_mask(torch.tensor([3000, 5000]), t, CFG, f)
    feats = log_magnitude_features(spec, mask)
    alone = log_magnitude_features(stft(short, CFG))
    t0 = alone.shape[1]
    torch.testing.assert_close(feats[0, :t0], alone[0], atol=1e-4, rtol=0)
    assert torch.all(feats[0, t0:] == 0)
    valid = feats[1].reshape(-1)
    assert abs(float(valid.mean())) < 1e-4 and abs(float(valid.std(unbiased=False)) - 1) < 1e-3


def test_log_magnitude_floors_digital_silence():
    x = torch.zeros(1, 4000)
    x[0, 1000:2000] = torch.randn(1000, generator=torch.Generator().manual_seed(2))
    feats = log_magnitude_features(stft(x, CFG), floor_db=80.0)
    spread = float(feats.max() - feats.min())
    # log range of 80 dB is ln(1e4) = 9.2 nats before normalization; the features stay bounded.
    assert torch.isfinite(feats).all() and spread < 20


def test_ideal_binary_labels_and_ratio_masks_hand_case():
    s = torch.tensor([[[[3.0, 0.0]], [[1.0, -2.0]]]], dtype=torch.complex64)  # (1, 2 sources, 1 frame, 2 freqs)
    assert ideal_binary_labels(s).tolist() == [[0, 1]]
    torch.testing.assert_close(ideal_ratio_masks(s)[0, :, 0], torch.tensor([[0.75, 0.0], [0.25, 1.0]]))


def test_masks_from_labels_and_proba():
    labels = torch.tensor([[0, 1, 1, -1, 2, 0]])
    m = masks_from_labels(labels, 3, frames=2, n_freqs=3)
    assert m.shape == (1, 3, 2, 3)
    assert m.sum(1).reshape(-1).tolist() == [1, 1, 1, 0, 1, 1]
    assert m[0, 2].reshape(-1).tolist() == [0, 0, 0, 0, 1, 0]
    proba = torch.softmax(torch.randn(1, 6, 2), -1)
    p = masks_from_proba(proba, 3, 2, 3)  # asking for more sources than columns pads with zeros
    torch.testing.assert_close(p[0, :2].reshape(2, -1), proba[0].T)
    assert torch.all(p[0, 2] == 0)


def test_complementary_masks_resynthesize_the_mixture():
    g = torch.Generator().manual_seed(3)
    src = torch.randn(2, 2, 3001, generator=g)  # (batch, sources, time)
    mix = src.sum(1)
    specs = stft(src, CFG)
    labels = ideal_binary_labels(specs)
    b, _, t, f = specs.shape
    masks = masks_from_labels(labels, 2, t, f)
    out = apply_masks(masks, stft(mix, CFG), mix.shape[-1], CFG)
    assert out.shape == (2, 2, 3001)
    torch.testing.assert_close(out.sum(1), mix, atol=1e-4, rtol=0)


@pytest.mark.parametrize("n_sources", [1, 2, 3, 4])
def test_ideal_binary_labels_are_the_argmax_of_the_magnitudes(n_sources):
    g = torch.Generator().manual_seed(n_sources)
    s = torch.randn(3, n_sources, 40, 129, generator=g, dtype=torch.complex64)
    s[:, :, :4] = 0  # ties: the first source, as argmax
    s[1, :, 5] = 1 + 1j
    s[0, n_sources - 1, 7, 3] = float("nan")  # NaN wins, as with argmax
    assert torch.equal(ideal_binary_labels(s), s.abs().argmax(dim=1).reshape(3, -1))
