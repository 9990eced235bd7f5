"""Resampling: a span of the output computed from a span of the input."""

import numpy as np
import pytest
import torch
from scipy.signal import resample_poly

from domains.audio.audio_io import resample, resample_array, resample_span, resampled_length


@pytest.mark.parametrize("orig, new", [(37, 40), (46, 40), (40, 40), (16000, 8000), (44100, 8000), (8000, 11025)])
def test_a_span_is_the_slice_of_resampling_the_whole_signal_bit_for_bit(orig, new):
    g = np.random.default_rng(orig + new)
    for n in (1, 30, 997, 24_001):
        x = g.standard_normal(n)
        g_ = np.gcd(orig, new)
        whole = resample_poly(x, new // g_, orig // g_) if orig != new else x
        assert len(whole) == resampled_length(n, orig, new)
        np.testing.assert_array_equal(resample_array(x, orig, new), whole)
        assert torch.equal(resample(torch.from_numpy(x), orig, new), torch.from_numpy(whole))
        for _ in range(20):
            a = int(g.integers(0, len(whole) + 1))
            b = int(g.integers(a, len(whole) + 1))
            np.testing.assert_array_equal(resample_span(x, orig, new, a, b), whole[a:b])
