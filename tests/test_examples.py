"""The examples run as a user would run them: no arguments, on CPU, in under a minute."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_custom_domain_example_trains_evaluates_saves_and_loads(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="2")
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "custom_domain.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    raw, learned = map(float, re.search(r"raw points: ([-\d.]+)\s+embedseg: ([-\d.]+)", out).groups())
    assert raw < 0.2 and learned > 0.9, out
    assert "identical predictions: True" in out
    assert os.listdir(tmp_path) == []  # the example cleans up after itself
    print(f"custom_domain.py ran in {elapsed:.1f} s")


def test_custom_domain_adapter_is_small():
    source = (EXAMPLES / "custom_domain.py").read_text()
    start = source.index("class RingsDomain")
    end = source.index("# -- a network", start)
    lines = [line for line in source[start:end].splitlines() if line.strip()]
    assert len(lines) < 80
