#!/usr/bin/env bash
# Create or refresh the project's virtual environment (.venv) with every extra installed.
# Idempotent: it reinstalls only when pyproject.toml or this script changed since the last run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
stamp_file="$VENV/.embedseg-install-stamp"
stamp=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)

if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi

if [ ! -f "$stamp_file" ] || [ "$(cat "$stamp_file")" != "$stamp" ]; then
  echo "[bootstrap] installing embedseg-dc[audio,image,dev] into $VENV (first run: a few minutes)"
  # pip's WARNING lines about absent local mirrors are noise; real errors still fail the script.
  "$VENV/bin/python" -m pip install --quiet -e ".[audio,image,dev]" 2> >(grep -v "^WARNING: Location" >&2)
  echo "$stamp" > "$stamp_file"
fi
