#!/usr/bin/env bash
# The test command: set up the environment (venv, system voices for the audio tests), run pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/test_losses.py -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
if [ -f scripts/install_speech_voices.sh ]; then
  bash scripts/install_speech_voices.sh
fi
exec .venv/bin/python -m pytest "$@"
