"""Shared fixtures of the audio tests: a tiny synthesized speech corpus (session-scoped)."""

import os
import subprocess
from pathlib import Path

import pytest

from domains.audio.corpus import build_speech_corpus, missing_speech_tools

REPO = Path(__file__).resolve().parents[2]
TINY_VOICES = ["mb-us1", "mb-us3", "mb-de5", "flite-slt", "fest-rab"]


def _ensure_speech_tools() -> None:
    """Install the synthesizers with the project's script when missing and running as root."""
    missing = missing_speech_tools()
    if not missing:
        return
    if os.geteuid() != 0:
        pytest.fail(f"Speech synthesis tools missing ({missing}); run scripts/install_speech_voices.sh as root.")
    subprocess.run(["bash", str(REPO / "scripts" / "install_speech_voices.sh")], check=True)
    assert not missing_speech_tools()


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """Five voices (all three synthesizers) x four sentences at 8 kHz."""
    _ensure_speech_tools()
    root = tmp_path_factory.mktemp("speech")
    return build_speech_corpus(root, voices=TINY_VOICES, n_sentences=4, seed=0)
