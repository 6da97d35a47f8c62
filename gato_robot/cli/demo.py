"""The README's main job (`gato-demo`) and `gato-token-layout`.

`gato-demo` shows the whole system on the simulated RGB-stacking robot:

1. the token layout of one timestep (from a real simulated observation);
2. one simulated episode through the full ROS 2 stack (sim node, tokenizer, ONNX policy, controller, separate
   processes on real DDS), with an MP4 of the front-left camera; the policy is ``--model`` or, until a trained
   default policy ships, a random-weight tiny model exported on the spot (it moves the arm, it does not stack);
3. the scripted expert on the five test triplets through the benchmark runner: success table, bar chart, MP4.

`gato-token-layout` prints step 1 only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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
    ap = argparse.ArgumentParser(prog="gato-demo", description=__doc__.split("\n\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/demo"), help="where results and videos go")
    ap.add_argument("--model", type=Path, default=None, help="exported ONNX policy directory (default: untrained tiny)")
    ap.add_argument("--steps", type=int, default=100, help="control steps of the ROS stack episode (20 per second)")
    ap.add_argument("--expert-episodes", type=int, default=2, help="scripted-expert episodes per test triplet")
    ap.add_argument("--skip-stack", action="store_true", help="do not run the ROS 2 stack")
    ap.add_argument("--skip-expert", action="store_true", help="do not run the scripted-expert benchmark")
    args = ap.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(VOCAB_TABLE)
    print_layout(2)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.skip_stack:
        from gato_robot.ros.demo import run_stack_episode

        model = args.model
        if model is None:
            print("\nno --model given: exporting a random-weight tiny policy (it moves the arm; it cannot stack)")
            from gato_robot.model.export import export_random_policy

            model = export_random_policy(args.out / "untrained_tiny", parity_steps=3)
        print(f"\nROS 2 stack on the simulated robot: {args.steps} control steps with the policy in {model}")
        summary = run_stack_episode(model, args.out, steps=args.steps)
        (args.out / "stack_episode.json").write_text(json.dumps(summary, indent=2))
        print(json.dumps(summary, indent=2))
        if summary["arm_commands"] == 0 or summary["steps"] < args.steps:
            print(f"gato-demo: the stack did not complete the episode; see {summary['log']}", file=sys.stderr)
            return 1
    if not args.skip_expert:
        from gato_robot.sim.benchmark import run, table
        from gato_robot.sim.objects import TEST_TRIPLETS

        print(f"\nscripted expert, {args.expert_episodes} episodes on each test triplet (video of the first)")
        rows = run("expert", list(TEST_TRIPLETS), args.expert_episodes, workers=2, out=args.out / "expert",
                   video_episodes=1)
        print(table(rows, "expert"))
    print(f"\nresults in {args.out}/: stack_episode.mp4, stack_episode.json, expert/results.md, "
          "expert/success.png, expert/episodes.mp4")
    return 0


if __name__ == "__main__":
    sys.exit(main())
