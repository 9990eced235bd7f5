#!/usr/bin/env bash
# The main job: both built-in domains end to end on built-in data, outputs under outputs/.
#   1. image: synthetic scenes -> train a U-Net for a few minutes on CPU -> segment held-out
#      scenes with more objects than any training scene, next to a tuned classic watershed.
#   2. audio: a speech corpus synthesized from Debian's voices, and one of real people's
#      recordings from Debian's packages -> separate held-out two-speaker mixtures of each with
#      the shipped model, next to the oracle binary and ratio masks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
mkdir -p outputs

echo "== image segmentation =="
.venv/bin/python examples/image_segmentation.py --out outputs/image_segmentation.png

echo "== speech separation =="
# The recordings of real people behind `embedseg data speech-real`; the example scores the real
# speakers only when they are there.
bash scripts/install_speech_real.sh || echo "[demo] the real speech recordings could not be installed (needs root and apt-get); run scripts/install_speech_real.sh as root." >&2
if bash scripts/install_speech_voices.sh; then
  .venv/bin/python examples/audio_separation.py --pretrained --real data/speech-real --out outputs/audio
else
  echo "[demo] the speech synthesizers could not be installed (needs root and apt-get):" >&2
  echo "[demo] skipping the audio example; run scripts/install_speech_voices.sh as root." >&2
fi
echo "outputs written under outputs/"
