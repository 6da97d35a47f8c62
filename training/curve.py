"""Learning curve of a training run: simulated success and held-out loss against training steps.

    python -m gato_robot.training.curve runs/stacking-cpu [--out runs/stacking-cpu/learning_curve.png]
    python -m gato_robot.training.curve runs/fb1 runs/fb2 --out runs/fb2/lineage_curve.png
    python -m gato_robot.training.curve runs/fb1 runs/fb2 --benchmark fb2=runs/fb2-bench100/results.json

Several runs make a lineage: each run after the first must be fine-tuned (``model.init_from``) from a
``step_N`` checkpoint of the run before it, and its steps are counted from there, so the x axis is the total
number of optimizer steps behind each point.

Reads the run's ``evaluations.jsonl`` (written by the trainer at every held-out evaluation, rollout and simulated
benchmark; on a resumed run the newest line of a step wins) and writes a PNG and the same numbers beside it (``learning_curve.json``): mean
success over the evaluated triplets (and each triplet) with Wilson 95% intervals when the episode count is known,
and the held-out loss on a second axis. ``--benchmark RUN=RESULTS`` adds a run's benchmark (``results.json`` of
``gato_robot.sim.benchmark`` or ``gato_robot.ros.evaluate``: every episode counted, 95% interval drawn) at the step
where that run ended: the in-training evaluations see a few episodes each, a benchmark hundreds.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from gato_robot.core.results import ResultsError, load_results
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
    episodes, steps = 0, 0
    config = run / "train_config.json"
    if config.is_file():
        run_cfg = json.loads(config.read_text()).get("run", {})
        episodes, steps = int(run_cfg.get("sim_eval_episodes", 0)), int(run_cfg.get("steps") or 0)
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
    end = max([steps] + [p["step"] for p in points])
    return {"run": str(run), "sim_eval_episodes_per_triplet": episodes, "points": points, "ends": {run.name: end}}


def _init_checkpoint(run: Path) -> tuple[Path, int] | None:
    """The checkpoint a run was fine-tuned from (``model.init_from`` ending in ``step_N``) and its step N."""
    config = run / "train_config.json"
    if not config.is_file():
        return None
    init = json.loads(config.read_text()).get("model", {}).get("init_from")
    match = re.search(r"step_0*(\d+)/?$", str(init or ""))
    return (Path(init), int(match.group(1))) if match else None


def read_lineage(run_dirs: list[str | Path]) -> dict[str, Any]:
    """Chain runs fine-tuned one from the next into one curve, steps counted from the first run's start."""
    runs = [Path(r) for r in run_dirs]
    points: list[dict[str, Any]] = []
    offset, boundaries, ends = 0, [], {}
    for k, run in enumerate(runs):
        curve = read_curve(run)
        if k:
            fork = _init_checkpoint(run)
            if fork is None:
                raise ValueError(f"{run} was not fine-tuned from a step_N checkpoint (model.init_from), so it "
                                 f"does not continue {runs[k - 1]}")
            init, start = fork
            if init.resolve().parent.parent != runs[k - 1].resolve():
                raise ValueError(f"{run} was fine-tuned from {init}, not from a checkpoint of {runs[k - 1]}")
            offset += start
            boundaries.append(offset)
            points = [p for p in points if p["step"] <= offset]  # the previous run's points past the fork
        points += [dict(p, step=p["step"] + offset, run=run.name) for p in curve["points"]]
        ends[run.name] = offset + curve["ends"][run.name]
    return {"run": " -> ".join(r.name for r in runs), "runs": [str(r) for r in runs], "boundaries": boundaries,
            "ends": ends,
            "sim_eval_episodes_per_triplet": curve["sim_eval_episodes_per_triplet"], "points": points}


def read_benchmarks(curve: dict[str, Any], specs: list[str]) -> list[dict[str, Any]]:
    """``RUN=RESULTS`` -> {run, step (where RUN ended), episodes, successes, success, ci95, path}."""
    points = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not path:
            raise ValueError(f"--benchmark {spec!r}: expected RUN=RESULTS.json")
        name = Path(name).name
        if name not in curve["ends"]:
            raise ValueError(f"--benchmark {spec!r}: {name} is not one of the runs ({', '.join(curve['ends'])})")
        try:
            episodes = load_results(path)["episodes"]
        except ResultsError as e:
            raise ValueError(f"--benchmark {spec!r}: {e}") from None
        successes = sum(e["success"] for e in episodes)
        points.append({"run": name, "step": curve["ends"][name], "episodes": len(episodes), "successes": successes,
                       "success": successes / len(episodes),
                       "ci95": list(wilson_interval(successes, len(episodes))), "path": str(path)})
    return sorted(points, key=lambda b: b["step"])


def plot(curve: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bench = curve.get("benchmarks", [])
    fig, ax = plt.subplots(figsize=(8, 4.5) if bench else (7, 4))
    sim = [p for p in curve["points"] if "mean_success" in p]
    if sim:
        steps = [p["step"] for p in sim]
        ax.plot(steps, [100 * p["mean_success"] for p in sim], "o-", color="grey" if bench else "black",
                alpha=0.7 if bench else 1.0, label="mean success" + (" (in-training evaluation)" if bench else ""))
        if all("mean_ci95" in p for p in sim):
            ax.fill_between(steps, [100 * p["mean_ci95"][0] for p in sim], [100 * p["mean_ci95"][1] for p in sim],
                            color="black", alpha=0.12, label="95% interval")
        for t in [] if bench else sorted({t for p in sim for t in p["success"]}):  # a benchmark: its own rows
            ax.plot(steps, [100 * p["success"].get(t, float("nan")) for p in sim], ".--", alpha=0.6,
                    label=t.replace("rgb_test_", ""))
    for b in curve.get("boundaries", []):
        ax.axvline(b, color="grey", lw=0.8, ls=":")
    if bench:
        y = [100 * b["success"] for b in bench]
        err = [[v - 100 * b["ci95"][0] for v, b in zip(y, bench)], [100 * b["ci95"][1] - v for v, b in zip(y, bench)]]
        ax.errorbar([b["step"] for b in bench], y, yerr=err, fmt="D-", color="tab:blue", capsize=3, lw=1.5,
                    label="benchmark of the run (95% interval)")
        for b, v in zip(bench, y):
            ax.annotate(f"{v:.0f}% (n={b['episodes']})", (b["step"], 100 * b["ci95"][0]), textcoords="offset points",
                        xytext=(0, -11), ha="center", fontsize=7, color="tab:blue")
    ax.set_xlabel("training step" + (" (the runs chained)" if curve.get("boundaries") else ""))
    ax.set_ylabel("simulated success (%)")
    ax.set_ylim(-2, 102)
    losses = [p for p in curve["points"] if p.get("eval_loss") is not None]
    if losses:
        ax2 = ax.twinx()
        # each run of a lineage holds out its own episodes: its losses form their own segment
        segments: dict[str, list[dict[str, Any]]] = {}
        for p in losses:
            segments.setdefault(p.get("run", ""), []).append(p)
        for k, seg in enumerate(segments.values()):
            ax2.plot([p["step"] for p in seg], [p["eval_loss"] for p in seg], "s-", color="tab:red", alpha=0.7,
                     label="held-out loss" + (" (each run its own held-out set)" if len(segments) > 1 else "")
                     if k == 0 else None)
        ax2.set_ylabel("held-out loss (nats / action token)", color="tab:red")
        ax2.legend(loc="upper right" if bench else "upper center", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(curve["run"] if "runs" in curve else Path(curve["run"]).name)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", nargs="+", help="training run folder (run.out_dir); several: a lineage of fine-tuned runs")
    p.add_argument("--out", help="PNG path (default: the last RUN/learning_curve.png)")
    p.add_argument("--benchmark", action="append", default=[], metavar="RUN=RESULTS",
                   help="a benchmark results.json of RUN (its folder name), drawn where RUN ended (repeatable)")
    a = p.parse_args(argv)
    try:
        curve = read_curve(a.run[0]) if len(a.run) == 1 else read_lineage(a.run)
        curve["benchmarks"] = read_benchmarks(curve, a.benchmark)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out) if a.out else Path(a.run[-1]) / "learning_curve.png"
    out.with_suffix(".json").write_text(json.dumps(curve, indent=1))
    plot(curve, out)
    for point in curve["points"]:
        sim = f"  success {100 * point['mean_success']:.1f}%" if "mean_success" in point else ""
        loss = f"  held-out loss {point['eval_loss']:.4f}" if point.get("eval_loss") is not None else ""
        print(f"step {point['step']:>7}{loss}{sim}")
    for b in curve["benchmarks"]:
        print(f"step {b['step']:>7}  benchmark of {b['run']}: {b['successes']}/{b['episodes']} "
              f"({100 * b['success']:.1f}%, {100 * b['ci95'][0]:.1f}-{100 * b['ci95'][1]:.1f})")
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
