"""LeRobotDataset v3 export and import throughput (frames/s), meant to run pinned to one core.

    python -m gato_robot.sim.collect --triplets test --episodes-per-triplet 2 --workers 1 --out /tmp/simdemos
    taskset -c 0 python benchmarks/lerobot_throughput.py /tmp/simdemos [--codec h264 av1] [--json out.json]

A frame is one timestep: both 128x128 cameras of the RGB-stacking spec plus state, action and reward. Export reads
our HDF5 episodes (gzip, CRC-checked) and encodes the videos; import decodes them (one episode at a time) and
writes HDF5 episodes. Each direction writes into a fresh temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

from gato_robot.data import lerobot as L


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("episodes", type=Path, help="a folder of our episode files")
    ap.add_argument("--codec", nargs="+", default=["h264", "av1"], choices=sorted(L.CODECS))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        for codec in args.codec:
            ex = L.export_dataset([args.episodes], Path(tmp) / codec, codec=codec)
            size = sum(p.stat().st_size for p in (Path(tmp) / codec).rglob("*") if p.is_file())
            im = L.import_dataset(Path(tmp) / codec, Path(tmp) / f"{codec}-back")
            rows.append({"codec": codec, "episodes": ex.episodes, "frames": ex.frames,
                         "export_frames_per_s": round(ex.fps, 1), "import_frames_per_s": round(im.fps, 1),
                         "dataset_mb": round(size / 2**20, 2)})
            print(f"{codec}: {ex.episodes} episodes, {ex.frames} frames; export {ex.fps:.0f} frames/s "
                  f"({ex.seconds:.1f} s), import {im.fps:.0f} frames/s ({im.seconds:.1f} s); dataset "
                  f"{size / 2**20:.1f} MB; {cores} core(s) allowed")
    if args.json:
        args.json.write_text(json.dumps({"cores": cores, "cpu": platform.processor(), "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
