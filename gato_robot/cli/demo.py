"""`gato-token-layout`: print how the RGB-stacking robot's observations and actions become tokens.

Uses a real simulated observation when the simulator is installed, else a synthetic one (same spec).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from gato_robot.core import vocab
from gato_robot.core.sequence import build_timestep
from gato_robot.core.specs import Kind, RobotSpec, rgb_stacking_spec
from gato_robot.core.tokenizer import Tokenizer

VOCAB_TABLE = f"""vocabulary ({vocab.VOCAB_SIZE} ids)
  [0, {vocab.TEXT_VOCAB_SIZE})          text (SentencePiece)
  [{vocab.BIN_OFFSET}, {vocab.BIN_OFFSET + vocab.NUM_BINS})      continuous bins (mu-law mu={vocab.MU:g} M={vocab.MU_LAW_M:g}; actions linear)
  [{vocab.DISCRETE_OFFSET}, {vocab.DISCRETE_OFFSET + vocab.NUM_DISCRETE_VALUES})      discrete values 0..{vocab.NUM_DISCRETE_VALUES - 1} (share the bin ids)
  {vocab.SEPARATOR}                  separator '|'
  image patches: {vocab.PATCH_SIZE}x{vocab.PATCH_SIZE} pixels, embedded by a ResNet block (not vocabulary ids)"""


def synthetic_observation(spec: RobotSpec, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        s.name: rng.integers(0, 256, s.shape, dtype=np.uint8) if s.kind is Kind.IMAGE else rng.normal(0, 0.3, s.shape)
        for s in spec.observations
    }


def simulated_observation(cameras: int, seed: int = 0) -> dict[str, np.ndarray] | None:
    """An observation from the PyBullet benchmark after reset, or None when the simulator is not installed."""
    try:
        from gato_robot.sim.env import RgbStackingEnv
    except ImportError:
        return None
    env = RgbStackingEnv(cameras=cameras)
    try:
        obs, _ = env.reset(seed=seed)
    finally:
        env.close()
    return dict(obs)


def print_layout(cameras: int, use_sim: bool = True) -> int:
    spec = rgb_stacking_spec(cameras)
    tok = Tokenizer(spec)
    obs = simulated_observation(cameras) if use_sim else None
    source = "simulated (PyBullet, after reset)" if obs is not None else "synthetic"
    obs = obs if obs is not None else synthetic_observation(spec)
    action = np.zeros(spec.actions[0].shape, np.float32)
    block = build_timestep(tok, obs, action)
    print(f"\n{spec.name}: one timestep from a {source} observation")
    print(f"  {'key':<28} {'kind':<22} {'tokens':>6}  {'first id':>8}")
    i = 0
    for key, kind, n in spec.layout():
        first = "patch" if kind == "image" else str(block.tokens[i])
        print(f"  {key:<28} {kind:<22} {n:>6}  {first:>8}")
        i += n
    print(f"  {'total':<28} {'':<22} {len(block):>6}")
    ctx = vocab.DEFAULT_CONTEXT_LENGTH
    print(f"  {ctx} tokens of context hold {ctx // len(block)} whole timesteps; "
          f"loss targets per timestep: {int(block.loss_mask.sum())} (the action tokens)")
    return len(block)


def layout_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gato-token-layout", description=__doc__)
    ap.add_argument("--cameras", type=int, nargs="+", default=[2, 3], help="camera counts to show (1-3)")
    ap.add_argument("--synthetic", action="store_true", help="do not use the simulator")
    args = ap.parse_args(argv)
    print(VOCAB_TABLE)
    for c in args.cameras:
        print_layout(c, use_sim=not args.synthetic)
    return 0


def main(argv: list[str] | None = None) -> int:
    """The README's main job. Today: the token layout of the RGB-stacking robot."""
    return layout_main(argv)


if __name__ == "__main__":
    sys.exit(main())
