"""Peak memory and time of inference on large inputs: memory is bounded by a tile or a chunk.

Each case runs in a fresh Python process and reports, for the call itself: its time, the
process's peak resident memory during the call (the high-water mark reset just before it; it
includes torch and the model, about 0.4 GB), and that peak above the memory resident when the
call began (which holds the input):

* images: ``model.segment`` of the shipped image model on an N x N scene (a 512 x 512
  synthetic scene tiled), N = 4000 (targets: < 2 GB, < 60 s on 2 CPU threads) and 10,000
  (target: completes);
* audio: ``model.separate(..., n_sources=None)`` of the shipped speech model on M minutes of a
  two-speaker mixture (a held-out test mixture repeated), M = 10 (targets: < 1 GB, real-time
  factor <= 0.02) and 60 (target: completes).

Usage::

    python benchmarks/bench_memory.py                 # every case
    python benchmarks/bench_memory.py image 4000      # one case
"""

from __future__ import annotations

import argparse
import json
import os
import gc
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = [("image", 4000), ("image", 10000), ("audio", 10), ("audio", 60)]


def _status_mb(key: str) -> float:
    """A memory figure of this process from /proc (Linux), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0  # kB
    raise KeyError(key)


def _start() -> float:
    """Reset the peak (high-water mark) to the current resident memory, which it returns: the
    input's own making must not count as the call's peak."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS")


def _peak_mb() -> float:
    return _status_mb("VmHWM")


def _image_case(size: int) -> dict:
    import numpy as np
    import torch

    import embedseg
    from domains.image import SyntheticScenes

    torch.set_num_threads(2)
    model = embedseg.load(ROOT / "pretrained" / "image-shapes")
    scene = np.asarray(SyntheticScenes(1, size=512, min_objects=120, max_objects=150, seed=3)[0]["image"], np.float32)
    reps = size // 512 + 1
    image = np.ascontiguousarray(np.tile(scene, (reps, reps))[:size, :size])
    del scene
    before = _start()
    start = time.perf_counter()
    labels = model.segment(image)
    seconds = time.perf_counter() - start
    return {"case": f"image {size} x {size}", "seconds": seconds, "peak_mb_above_start": _peak_mb() - before,
            "peak_mb": _peak_mb(), "start_mb": before, "instances": int(labels.max())}


def _audio_case(minutes: int) -> dict:
    import numpy as np
    import torch

    import embedseg

    torch.set_num_threads(2)
    model = embedseg.load(ROOT / "pretrained" / "audio-speech-8k")
    rate = model.domain.sample_rate
    rng = np.random.default_rng(0)
    # Two "talkers": harmonic tones whose pitch and loudness wander, switching on and off like
    # speech; a recording long enough to need many chunks.
    n = minutes * 60 * rate
    t = np.arange(n) / rate
    voices = []
    for f0, period in ((130.0, 2.3), (210.0, 3.1)):
        pitch = f0 * (1 + 0.1 * np.sin(2 * np.pi * t / period))
        phase = 2 * np.pi * np.cumsum(pitch) / rate
        wave = sum(np.sin(k * phase) / k for k in range(1, 8))
        gate = (np.sin(2 * np.pi * t / (period * 0.7) + rng.uniform(0, 6)) > -0.3).astype(np.float64)
        voices.append(wave * gate)
    mixture = (voices[0] + voices[1]).astype(np.float32) * 0.1
    del voices, t
    before = _start()
    start = time.perf_counter()
    sources = model.separate(mixture, n_sources=None)
    seconds = time.perf_counter() - start
    return {"case": f"audio {minutes} min", "seconds": seconds, "rtf": seconds / (minutes * 60),
            "peak_mb_above_start": _peak_mb() - before, "peak_mb": _peak_mb(), "start_mb": before, "sources": int(sources.shape[0])}


def run_case(kind: str, size: int) -> dict:
    """One case in a fresh process; returns its figures."""
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(size)], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if proc.returncode != 0:
        return {"case": f"{kind} {size}", "error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", nargs="?", choices=["image", "audio"])
    parser.add_argument("size", nargs="?", type=int, help="image side (pixels) or audio minutes")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = _image_case(args.size) if args.kind == "image" else _audio_case(args.size)
        print(json.dumps(result))
        return
    cases = [(args.kind, args.size)] if args.kind else CASES
    print("| case | seconds | real-time factor | resident at the call (MB) | peak during the call (MB) | peak above the call's start (MB) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for kind, size in cases:
        r = run_case(kind, size)
        if "error" in r:
            print(f"| {r['case']} | failed: {r['error']} | | | | |")
            continue
        rtf = f"{r['rtf']:.4f}" if "rtf" in r else ""
        print(f"| {r['case']} | {r['seconds']:.1f} | {rtf} | {r['start_mb']:.0f} | {r['peak_mb']:.0f} | {r['peak_mb_above_start']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
