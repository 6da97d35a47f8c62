"""Learning curve of a training run: simulated success and held-out loss against training steps.

    python -m gato_robot.training.curve runs/stacking-cpu [--out runs/stacking-cpu/learning_curve.png]

Reads the run's ``evaluations.jsonl`` (written by the trainer at every held-out evaluation, rollout and simulated
benchmark; on a resumed run the newest line of a step wins) and writes ``learning_curve.json`` and a PNG: mean
success over the evaluated triplets (and each triplet) with Wilson 95% intervals when the episode count is known,
and the held-out loss on a second axis.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gato_robot.core.stats import wilson_interval

EVALUATIONS = "evaluations.jsonl"


def read_curve(run_dir: str | Path) -> dict[str, Any]:
    """Per step: held-out loss, simulated success per triplet and mean (episodes per triplet from the config)."""
    run = Path(run_dir)
    path = run / EVALUATIONS
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is {run} a training run folder with evaluations?")
    by_step: dict[int, dict[str, float]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            print(f"{path}:{n}: not JSON, skipped", file=sys.stderr)
            continue
        by_step.setdefault(int(row.pop("step")), {}).update(row)
    episodes = 0
    config = run / "train_config.json"
    if config.is_file():
        episodes = int(json.loads(config.read_text()).get("run", {}).get("sim_eval_episodes", 0))
    points = []
    for step in sorted(by_step):
        row = by_step[step]
        success = {k[len("sim/success_"):]: v for k, v in row.items() if k.startswith("sim/success_")}
        point: dict[str, Any] = {"step": step, "eval_loss": row.get("eval/loss")}
        overall = success.pop("mean", None)  # the benchmark's own row over all its episodes
        if success:
            mean = overall if overall is not None else sum(success.values()) / len(success)
            point.update(success=success, mean_success=mean)
            if episodes:
                n = episodes * len(success)
                point["mean_ci95"] = list(wilson_interval(round(mean * n), n))
                point["episodes"] = n
        points.append(point)
    return {"run": str(run), "sim_eval_episodes_per_triplet": episodes, "points": points}


def plot(curve: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    sim = [p for p in curve["points"] if "mean_success" in p]
    if sim:
        steps = [p["step"] for p in sim]
        ax.plot(steps, [100 * p["mean_success"] for p in sim], "o-", color="black", label="mean success")
        if all("mean_ci95" in p for p in sim):
            ax.fill_between(steps, [100 * p["mean_ci95"][0] for p in sim], [100 * p["mean_ci95"][1] for p in sim],
                            color="black", alpha=0.12, label="95% interval")
        for t in sorted({t for p in sim for t in p["success"]}):
            ax.plot(steps, [100 * p["success"].get(t, float("nan")) for p in sim], ".--", alpha=0.6,
                    label=t.replace("rgb_test_", ""))
    ax.set_xlabel("training step")
    ax.set_ylabel("simulated success (%)")
    ax.set_ylim(-2, 102)
    losses = [p for p in curve["points"] if p.get("eval_loss") is not None]
    if losses:
        ax2 = ax.twinx()
        ax2.plot([p["step"] for p in losses], [p["eval_loss"] for p in losses], "s-", color="tab:red", alpha=0.7,
                 label="held-out loss")
        ax2.set_ylabel("held-out loss (nats / action token)", color="tab:red")
        ax2.legend(loc="upper center", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(Path(curve["run"]).name)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="training run folder (run.out_dir)")
    p.add_argument("--out", help="PNG path (default: RUN/learning_curve.png)")
    a = p.parse_args(argv)
    try:
        curve = read_curve(a.run)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out) if a.out else Path(a.run) / "learning_curve.png"
    (out.parent / "learning_curve.json").write_text(json.dumps(curve, indent=1))
    plot(curve, out)
    for point in curve["points"]:
        sim = f"  success {100 * point['mean_success']:.1f}%" if "mean_success" in point else ""
        loss = f"  held-out loss {point['eval_loss']:.4f}" if point.get("eval_loss") is not None else ""
        print(f"step {point['step']:>7}{loss}{sim}")
    print(f"wrote {out} and {out.parent / 'learning_curve.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
