"""Demo collection: N scripted-expert episodes per triplet, in parallel processes, one HDF5 file per episode
in the project's episode format (gato_robot.data.episodes: gzip-compressed images, checksums, no pickles).

    python -m gato_robot.sim.collect --triplets test --episodes-per-triplet 100 --workers 2 --out data/rgb_demos

Each file holds the policy observations of the spec (images rendered), the clipped actions, the sparse
rewards, metadata (task, triplet, objects, seed, success, return, policy="scripted_expert", success rule)
and the privileged object poses in ``extras/object_poses`` (T, 3, 7), never a policy input.
``--successful-only`` keeps only successful episodes (failed seeds are skipped, not retried).
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from gato_robot.data.episodes import Episode, write_episode
from gato_robot.sim import objects
from gato_robot.sim.env import RgbStackingEnv
from gato_robot.sim.expert import ScriptedExpert
from gato_robot.sim.rollout import run_episode


def collect_one(triplet: str, seed: int, out: Path, cameras: int, image_size: int,
                successful_only: bool) -> dict[str, Any]:
    env = _env(triplet, cameras, image_size)
    result = run_episode(env, ScriptedExpert(), seed, record=True)
    info = {"triplet": triplet, "seed": seed, "success": result.success, "path": None}
    if successful_only and not result.success:
        return info
    episode = Episode(
        spec=env.spec_,
        observations={k: np.stack(v) for k, v in result.observations.items()},
        actions={"action": np.stack(result.actions).astype(np.float32)},
        rewards=np.asarray(result.rewards, np.float32),
        metadata={
            "task": "rgb_stacking", "triplet": triplet, "objects": result.objects, "seed": seed,
            "success": result.success, "stacked_at_end": result.stacked_at_end, "return": result.episode_return,
            "policy": "scripted_expert", "success_rule": "stacked for >= 20 consecutive control steps (1 s)",
            "simulator": "pybullet", "control_hz": 20,
        },
        extras={"object_poses": np.stack(result.object_poses).astype(np.float32)},
    )
    info["path"] = str(write_episode(out / triplet / f"{triplet}_seed{seed:06d}", episode))
    return info


_ENVS: dict[tuple, RgbStackingEnv] = {}


def _env(triplet: str, cameras: int, image_size: int) -> RgbStackingEnv:
    """One env per worker process and configuration, reused across episodes."""
    key = (triplet, cameras, image_size)
    if key not in _ENVS:
        _ENVS[key] = RgbStackingEnv(triplet=triplet, cameras=cameras, image_size=image_size, privileged=True)
    return _ENVS[key]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--triplets", default="test", help="test, all, or comma-separated triplet names")
    ap.add_argument("--episodes-per-triplet", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cameras", type=int, default=2, help="2 (front left/right, as Gato) or 3")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0, help="first seed; episode i of each triplet uses seed + i")
    ap.add_argument("--successful-only", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("data/rgb_stacking_demos"))
    args = ap.parse_args(argv)
    try:
        triplets = objects.expand_triplets(args.triplets)
        if args.episodes_per_triplet < 1 or args.workers < 1:
            raise ValueError("--episodes-per-triplet and --workers must be at least 1")
        objects.mesh_files()  # fail here, once, if the mesh wheel is missing
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    jobs = [(t, args.seed + i) for t in triplets for i in range(args.episodes_per_triplet)]
    done: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(collect_one, t, s, args.out, args.cameras, args.image_size, args.successful_only)
                   for t, s in jobs]
        with tqdm(total=len(futures), desc="episodes", unit="ep") as bar:
            for f in as_completed(futures):
                done.append(f.result())
                bar.update(1)
                bar.set_postfix(success=f"{np.mean([d['success'] for d in done]):.0%}")
    written = sum(d["path"] is not None for d in done)
    print(f"wrote {written} episodes under {args.out} (expert success {np.mean([d['success'] for d in done]):.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
