"""The README's main job (`gato-demo`) and `gato-token-layout`.

`gato-demo` shows the whole system on the simulated RGB-stacking robot:

1. the token layout of one timestep (from a real simulated observation);
2. one simulated episode through the full ROS 2 stack (sim node, tokenizer, ONNX policy, controller, separate
   processes on real DDS), with an MP4 of the front-left camera; the policy is ``--model``, by default the
   trained policy this repository ships (models/rgb_stacking_mini, its actions sampled at temperature 1);
3. the same policy in the benchmark runner (ONNX Runtime, no ROS): a few episodes per test triplet, success
   table, bar chart, MP4;
4. the scripted expert on the five test triplets: success table, bar chart, MP4.

The shipped policy stacks in about one episode in nine (docs/stacking.md): most single episodes show it reach,
grasp and carry red without a stack. `gato-token-layout` prints step 1 only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from gato_robot.core import vocab
from gato_robot.core.results import load_results
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


def check_model(model: Path, trusted_key: Path | None) -> bool:
    """Load the policy once, as the stack and the benchmark will (``load_policy``: signature when a trusted key
    is given, manifest, fields, graph), before anything runs; False after one line on stderr saying why not."""
    from gato_robot.runtime.onnx_policy import load_policy

    try:
        load_policy(model, trusted_key=trusted_key, providers="cpu", warmup=False)
    except (ValueError, OSError) as e:  # ModelIntegrityError is a ValueError
        print(f"gato-demo: policy refused: {e}", file=sys.stderr)  # the message names the folder or file
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    from gato_robot.runtime.contract import check_temperature
    from gato_robot.runtime.loader import resolve_temperature
    from gato_robot.runtime.shipped import shipped_model_dir

    ap = argparse.ArgumentParser(prog="gato-demo", description="\n\n".join(__doc__.split("\n\n")[1:3]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/demo"), help="where results and videos go")
    ap.add_argument("--model", default=None,
                    help="exported ONNX policy directory (default: the shipped models/rgb_stacking_mini)")
    ap.add_argument("--trusted-key", type=Path, default=None, metavar="PUBLIC_KEY_PEM",
                    help="refuse a policy that is not signed by this key's private key (model.sig; "
                         "gato-sign-model); default: the origin is not checked")
    ap.add_argument("--random-model", action="store_true",
                    help="instead: a random-weight tiny policy exported on the spot (it moves the arm, cannot stack)")
    ap.add_argument("--temperature", type=float, default=None,
                    help="action sampling temperature of the policy (0: greedy); default: the model's recommendation "
                         "(its sampling.json: the shipped model samples at 1; greedy without one)")
    ap.add_argument("--steps", type=int, default=400,
                    help="control steps of the ROS stack episode (20 per second; a benchmark episode is 400)")
    ap.add_argument("--triplet", default="rgb_test_triplet5",
                    help="test triplet of the ROS stack episode (default: one of the two the shipped model stacks "
                         "most often)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the ROS stack episode")
    ap.add_argument("--policy-episodes", type=int, default=4,
                    help="benchmark episodes of the policy per test triplet (0: skip)")
    ap.add_argument("--expert-episodes", type=int, default=2, help="scripted-expert episodes per test triplet (0: skip)")
    ap.add_argument("--skip-stack", action="store_true", help="do not run the ROS 2 stack")
    ap.add_argument("--skip-expert", action="store_true", help="do not run the scripted-expert benchmark")
    args = ap.parse_args(argv)
    if args.temperature is not None:
        try:
            check_temperature(args.temperature, "--temperature")  # the policy contract's one check
        except ValueError as e:
            ap.error(str(e))
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.model is not None and not args.model.strip():
        print("gato-demo: --model is empty; give an exported policy directory, or leave --model out for the "
              "shipped policy", file=sys.stderr)
        return 2
    if args.model is not None and args.random_model:
        ap.error("--model and --random-model exclude each other")
    if args.model is not None and not check_model(Path(args.model), args.trusted_key):
        return 2
    print(VOCAB_TABLE)
    print_layout(2)
    args.out.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model is not None else None
    if args.random_model:
        print("\n--random-model: exporting a random-weight tiny policy (it moves the arm; it cannot stack)")
        from gato_robot.model.export import export_random_policy

        model = export_random_policy(args.out / "untrained_tiny", parity_steps=3)
        if not check_model(model, args.trusted_key):
            return 2
    elif model is None:
        model = shipped_model_dir()
        if model is None:
            print("gato-demo: the shipped policy (models/rgb_stacking_mini) is missing from this install; pass "
                  "--model DIR (an exported policy) or --random-model", file=sys.stderr)
            return 2
        if not check_model(model, args.trusted_key):
            return 2
        print(f"\npolicy: the shipped {model.name} ({model})")
    why = "--temperature" if args.temperature is not None else "the model's recommendation (greedy without one)"
    args.temperature = resolve_temperature(f"onnx:{model}", args.temperature)  # given, or the model's (verified)
    how = "decoded greedily" if args.temperature == 0 else f"sampled at temperature {args.temperature:g}"
    print(f"actions {how}: {why}")
    outputs = []
    if not args.skip_stack:
        from gato_robot.ros.demo import run_stack_episode

        print(f"\nROS 2 stack on the simulated robot: {args.triplet}, seed {args.seed}, {args.steps} control steps "
              f"with the policy in {model}")
        summary = run_stack_episode(model, args.out, steps=args.steps, triplet=args.triplet, seed=args.seed,
                                    temperature=args.temperature)
        (args.out / "stack_episode.json").write_text(json.dumps(summary, indent=2))
        print(json.dumps(summary, indent=2))
        if summary["arm_commands"] == 0 or summary["steps"] < args.steps:
            print(f"gato-demo: the stack did not complete the episode; see {summary['log']}", file=sys.stderr)
            return 1
        outputs += ["stack_episode.mp4", "stack_episode.json"]
    from gato_robot.sim.benchmark import policy_label, run, table
    from gato_robot.sim.objects import TEST_TRIPLETS

    if args.policy_episodes > 0:
        name = f"onnx:{model}"
        print(f"\n{name}: {args.policy_episodes} benchmark episodes on each test triplet (video of the first)")
        rows = run(name, list(TEST_TRIPLETS), args.policy_episodes, workers=2, out=args.out / "policy",
                   video_episodes=1, temperature=args.temperature, trusted_key=args.trusted_key)
        print(table(rows, policy_label(name, args.temperature)))
        outputs += ["policy/results.md", "policy/success.png", "policy/episodes.mp4"]
        episodes = load_results(args.out / "policy", allow_empty=True)["episodes"]
        stacked = [e for e in episodes if e["success"]]
        (args.out / "policy" / "stacked_episode.mp4").unlink(missing_ok=True)  # an earlier run's
        if stacked:  # show a stack: the first successful episode, re-run with frames
            from gato_robot.sim.benchmark import episode_video

            e = stacked[0]
            again = episode_video(name, e["triplet"], e["seed"], args.out / "policy" / "stacked_episode.mp4",
                                  args.temperature)
            print(f"{e['triplet']} seed {e['seed']} stacked; its video: policy/stacked_episode.mp4 (re-run: "
                  f"{'stacked again' if again['success'] else 'this time it did not stack'})")
            outputs.append("policy/stacked_episode.mp4")
        else:
            print(f"none of these {len(episodes)} episodes stacked")
    if not args.skip_expert and args.expert_episodes > 0:
        print(f"\nscripted expert, {args.expert_episodes} episodes on each test triplet (video of the first)")
        rows = run("expert", list(TEST_TRIPLETS), args.expert_episodes, workers=2, out=args.out / "expert",
                   video_episodes=1)
        print(table(rows, "expert"))
        outputs += ["expert/results.md", "expert/success.png", "expert/episodes.mp4"]
    print(f"\nresults in {args.out}/: " + ", ".join(outputs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
