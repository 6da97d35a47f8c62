"""lerobot's own reader and writer against our LeRobotDataset v3 code (issue 32 parts 3, 4).

    python benchmarks/lerobot_check.py read DIR     # LeRobotDataset(repo_id, root=DIR) offline, every frame read
    python benchmarks/lerobot_check.py write DIR    # a tiny v3 dataset written by lerobot (tests/data/lerobot_v3_tiny)

lerobot is not a dependency of this project (0.4.4 pins torch < 2.11; we pin 2.13). It was run from a side
install: ``pip install --no-deps --target /tmp/lrsite lerobot==0.4.4 "datasets>=4,<4.2" "huggingface_hub==0.35.3"
draccus==0.10.0 accelerate pandas pillow fsspec torchvision==0.28.0 ...`` then ``PYTHONPATH=/tmp/lrsite``
(docs/lerobot.md lists the whole line). Its video backends need torchcodec (which needs a system FFmpeg) or
``torchvision.io.VideoReader`` (gone from torchvision 0.28, the build for torch 2.13), so ``read`` swaps lerobot's
``decode_video_frames`` for the same algorithm on PyAV: seek to the first timestamp, decode to the last, take
the nearest frame and assert it lies within ``tolerance_s`` (lerobot's check). Everything else (info.json,
stats, tasks, episode metadata, the Parquet frames through HF datasets, the timestamp checks) is lerobot's.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np


def _decode_pyav(video_path: Any, timestamps: list[float], tolerance_s: float, backend: Any = None) -> Any:
    import av
    import torch

    first, last = min(timestamps), max(timestamps)
    frames, ts = [], []
    with av.open(str(video_path)) as c:
        s = c.streams.video[0]
        c.seek(int(first / s.time_base), stream=s, backward=True)
        for f in c.decode(s):
            t = float(f.pts * f.time_base)
            frames.append(torch.from_numpy(f.to_ndarray(format="rgb24")).permute(2, 0, 1))
            ts.append(t)
            if t >= last:
                break
    dist = torch.cdist(torch.tensor(timestamps)[:, None], torch.tensor(ts)[:, None], p=1)
    nearest, idx = dist.min(1)
    assert (nearest < tolerance_s).all(), f"frames {timestamps} not within {tolerance_s} s of {ts} in {video_path}"
    return torch.stack([frames[i] for i in idx]).float() / 255


def read_with_lerobot(root: str | Path) -> tuple[int, dict[str, Any]]:
    """(frames read, the last item) after reading every frame of ``root`` through lerobot's LeRobotDataset."""
    import importlib.util

    import lerobot.datasets.lerobot_dataset as ld
    import lerobot.datasets.video_utils as vu

    if importlib.util.find_spec("torchcodec") is None:
        vu.decode_video_frames = ld.decode_video_frames = _decode_pyav
    ds = ld.LeRobotDataset("local/gato_export", root=root)
    item: dict[str, Any] = {}
    for i in range(len(ds)):
        item = ds[i]
    print(f"lerobot read {ds.num_episodes} episodes, {len(ds)} frames at {ds.fps} fps; video keys "
          f"{ds.meta.video_keys}; tasks {list(ds.meta.tasks.index)}; stats for {sorted(ds.meta.stats)}")
    return len(ds), item


def write_fixture(root: str | Path) -> None:
    """2 episodes x 10 frames, one 32x48 camera (AV1, lerobot's default codec), a 4-element state, a 3-element
    action, two tasks. No next.reward / next.success: lerobot 0.4.4 fails on shape-(1,) features under numpy 2.4
    (datasets' encode_example calls float() on a 1-element array)."""
    import lerobot.datasets.lerobot_dataset as ld

    root = Path(root)
    shutil.rmtree(root, ignore_errors=True)
    features = {
        "observation.images.top": {"dtype": "video", "shape": (32, 48, 3), "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (4,), "names": ["j0", "j1", "j2", "gripper"]},
        "action": {"dtype": "float32", "shape": (3,), "names": ["vx", "vy", "grip"]},
    }
    ds = ld.LeRobotDataset.create("local/tiny", fps=10, root=root, robot_type="toy_arm", features=features,
                                  use_videos=True, image_writer_threads=0)
    y, x = np.mgrid[0:32, 0:48]
    tasks = ["pick up the cube", "push the cube left"]
    for e in range(2):
        for t in range(10):
            img = np.stack([(x * 5 + 8 * t) % 256, y * 7 + 10 * e, np.full_like(x, 100)], -1).astype(np.uint8)
            ds.add_frame({"observation.images.top": img,
                          "observation.state": np.array([t / 10, -t / 10, e, 0.5], np.float32),
                          "action": np.array([0.1 * t, -0.2, float(t > 5)], np.float32), "task": tasks[e]})
        ds.save_episode()
    ds.finalize()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("read", "write"):
        sys.exit(__doc__)
    if sys.argv[1] == "read":
        read_with_lerobot(sys.argv[2])
        print("ACCEPTED")
    else:
        write_fixture(sys.argv[2])
