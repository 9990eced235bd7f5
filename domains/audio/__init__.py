"""The audio domain: speech separation by deep clustering (Hershey et al. 2015).

Public pieces: :class:`AudioDomain` (the adapter registered as "audio"), :class:`MixtureDataset`
(wsj0-2mix-style mixtures from any ``root/<speaker>/*.wav`` folder), :func:`build_speech_corpus`
(a multi-voice speech corpus synthesized from Debian packages), the STFT features and the
separation metrics.
"""
