"""The audio domain: speech separation by deep clustering (Hershey et al. 2015).

Public pieces: :class:`AudioDomain` (the adapter registered as "audio"), :class:`MixtureDataset`
(wsj0-2mix-style mixtures from any ``root/<speaker>/*.wav`` folder), :func:`build_speech_corpus`
(a multi-voice speech corpus synthesized from Debian packages), :func:`build_real_speech_corpus`
(real recorded speech gathered from Debian packages), :func:`shift_formants` (new voices from a
corpus's speakers), the networks ("dc_blstm", "dc_compact", "dc_tcn", "dc_conv_blstm") and
:func:`widen_blstm` (more units for a trained BLSTM, its outputs unchanged), :class:`CountHead`
and :func:`with_count_head` (a trained network that learns to count talkers),
:class:`FrameAttention` and :func:`with_attention` (self-attention over a trained BLSTM's frames,
its outputs unchanged at the start), the STFT features and the separation metrics.
"""

from __future__ import annotations

from .corpus import SPLITS, VOICE_SETS, VOICES, build_speech_corpus, wordnet_sentences
from .corpus_real import RealSpeechCorpus, build_real_speech_corpus
from .augment import ChannelAugmentation
from .voice import shift_formants
from .dataset import MixedCorpusDataset, MixtureDataset
from .domain import AudioDomain
from .model import AudioModel
from .features import STFTConfig, istft, stft
from .metrics import AudioMetrics, bss_eval_sources, oracle_separation, sdr, separation_scores, si_sdr
from .networks import (
    BLSTMEmbedding, CompactBLSTMEmbedding, ConvBLSTMEmbedding, CountHead, DilatedConvEmbedding, FrameAttention,
    widen_blstm, with_attention, with_count_head,
)

__all__ = [
    "AudioDomain",
    "AudioModel",
    "MixtureDataset",
    "MixedCorpusDataset",
    "ChannelAugmentation",
    "shift_formants",
    "build_speech_corpus",
    "wordnet_sentences",
    "build_real_speech_corpus",
    "RealSpeechCorpus",
    "VOICES",
    "VOICE_SETS",
    "SPLITS",
    "BLSTMEmbedding",
    "CompactBLSTMEmbedding",
    "DilatedConvEmbedding",
    "ConvBLSTMEmbedding",
    "widen_blstm",
    "CountHead",
    "with_count_head",
    "FrameAttention",
    "with_attention",
    "STFTConfig",
    "stft",
    "istft",
    "AudioMetrics",
    "bss_eval_sources",
    "sdr",
    "si_sdr",
    "separation_scores",
    "oracle_separation",
]
