"""Success rates by rolling out a policy in a domain's environment (the trainer's rollout hook, from the shell):

    python -m gato_robot.domains.evaluate --domain babyai --task GoToRedBall --episodes 50 --checkpoint RUN/checkpoints/step_X
    python -m gato_robot.domains.evaluate --domain metaworld --task reach-v3 --episodes 50 --random   # the baseline

Both use the same evaluation seeds (``--seed``, default 10,000,000: disjoint from the generators' seeds) and the
same code path (``gato_robot.domains.rollouts.rollout``). Prints one JSON line per task.
"""

from __future__ import annotations

import argparse
import json
import sys

from gato_robot.domains import ROLLOUT_KINDS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--domain", required=True, choices=ROLLOUT_KINDS)
    p.add_argument("--task", nargs="+", required=True, help="BabyAI levels, Meta-World tasks or RGB triplets")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=10_000_000)
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy actions; > 0: sampled (Gato samples)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--checkpoint", help="a model checkpoint folder (model.safetensors + config.json)")
    who.add_argument("--random", action="store_true", help="the uniform random policy baseline")
    args = p.parse_args(argv)

    from gato_robot.domains import rollouts
    from gato_robot.domains.control import RandomPolicy

    spec = rollouts.domain_spec(args.domain)
    if args.random:
        policy, name = RandomPolicy(spec, seed=args.seed), "random"
    else:
        import torch

        from gato_robot.model.checkpoint import load_checkpoint
        from gato_robot.model.policy import TorchPolicy

        torch.set_num_threads(1)
        model, _ = load_checkpoint(args.checkpoint)  # the model is spec-free; the domain gives the spec
        policy, name = TorchPolicy(model, spec, temperature=args.temperature, seed=args.seed), args.checkpoint
    for task in args.task:
        r = rollouts.rollout(args.domain, policy, task, args.episodes, seed=args.seed)
        print(json.dumps({"policy": name, "temperature": 0.0 if args.random else args.temperature,
                          "domain": args.domain, **r.as_dict()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
