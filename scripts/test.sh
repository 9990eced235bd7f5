#!/usr/bin/env bash
# The test command: set up the environment (venv, system voices and recordings for the audio tests),
# run pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/test_losses.py -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
if [ -f scripts/install_speech_voices.sh ]; then
  # The audio corpus tests need the speech synthesizers; installing them needs root.
  bash scripts/install_speech_voices.sh || echo "[test] speech voices unavailable: the corpus tests will say so" >&2
fi
if [ -f scripts/install_speech_real.sh ]; then
  # The real-speech corpus test reads recordings from Debian packages; installing them needs root.
  bash scripts/install_speech_real.sh || echo "[test] real speech recordings unavailable: the corpus tests will say so" >&2
fi
exec .venv/bin/python -m pytest "$@"
