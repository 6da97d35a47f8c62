"""Benchmark runner: any policy x any triplet set x N episodes, in parallel processes.

    python -m gato_robot.sim.benchmark --policy expert --triplets test --episodes 100 --workers 2 --out runs/bench

Writes ``results.json`` (every episode), ``results.md`` (success per triplet with Wilson 95% intervals, beside
DeepMind's state-based MPO specialists), ``success.png`` (bar chart) and ``episodes.mp4`` (a few episodes).
Success is the episode rule of success.py (stacked for >= 1 s at any time); ``stacked_at_end`` is reported too.
``--trusted-key PUBLIC_KEY_PEM`` refuses exported policies not signed by its private key (``model.sig``,
``gato_robot.runtime.trust``), checked once before any worker starts.

Evaluation protocol (issue 30, ``gato_robot.core.eval_protocol``): seeds 0-99999 are the selection range, for every
choice; the report range (seeds from 1_000_000_000, blocks of 1,000) reports a chosen model once: ``--report-block K
--lineage NAME``, checked against and written to the ledger ``benchmarks/report_ledger.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from gato_robot.core import eval_protocol
from gato_robot.core.results import load_results
from gato_robot.core.specs import CAMERA_PREFIX, Kind, RobotSpec
from gato_robot.core.stats import wilson_interval
from gato_robot.robots import load_embodiment
from gato_robot.runtime.loader import resolve_temperature
from gato_robot.sim import objects
from gato_robot.sim.env import RgbStackingEnv
from gato_robot.sim.policies import make_policy, needs_privileged
from gato_robot.sim.rollout import run_episode

# DeepMind's released state-based MPO specialists, 1000 episodes per triplet (rgb_stacking.md).
MPO_SPECIALISTS = {"rgb_test_triplet1": 77.7, "rgb_test_triplet2": 47.4, "rgb_test_triplet3": 83.5,
                   "rgb_test_triplet4": 79.9, "rgb_test_triplet5": 89.5}


def _env_for(policy: Any, policy_name: str, triplet: str, images: bool, robot: str = "panda") -> RgbStackingEnv:
    """An env of ``robot`` whose cameras and image size follow the policy's spec when it has one (learned
    policies), else the two front cameras at 128 x 128 (as Gato)."""
    spec = getattr(policy, "spec", None)
    cameras: Any = 2
    size = 128
    if isinstance(spec, RobotSpec):
        images_specs = [s for s in spec.observations if s.kind is Kind.IMAGE]
        if images_specs:
            cameras = [s.name[len(CAMERA_PREFIX):] for s in images_specs]
            size = images_specs[0].shape[0]
    return RgbStackingEnv(triplet=triplet, cameras=cameras, image_size=size, render_images=images,
                          privileged=needs_privileged(policy_name), robot=robot)


def policy_label(policy: str, temperature: float) -> str:
    """The policy's name in tables and charts, saying when its actions are sampled."""
    return policy if temperature == 0 else f"{policy} (sampled, temperature {temperature:g})"


def _episode(env: RgbStackingEnv, policy: Any, seed: int, temperature: float, frames: bool = False):
    if temperature > 0:  # a sampling policy draws from the episode's seed: the same results whatever the chunking
        policy.seed = seed
    return run_episode(env, policy, seed, frames=frames)


def _run_chunk(policy_name: str, triplet: str, seeds: list[int], images: bool,
               threads: int | None = None, temperature: float = 0.0, robot: str = "panda") -> list[dict[str, Any]]:
    policy = make_policy(policy_name, seed=seeds[0] if seeds else 0, threads=threads, temperature=temperature)
    env = _env_for(policy, policy_name, triplet, images, robot)
    out = [_episode(env, policy, s, temperature).summary() for s in seeds]
    env.close()
    return out


def _video(policy_name: str, triplet: str, seeds: list[int], path: Path,
           temperature: float = 0.0, robot: str = "panda") -> list[dict[str, Any]]:
    """An MP4 of these episodes (re-run with frames); returns their summaries."""
    import imageio.v2 as imageio

    policy = make_policy(policy_name, temperature=temperature)
    env = _env_for(policy, policy_name, triplet, images=True, robot=robot)
    summaries = []
    with imageio.get_writer(path, fps=20, codec="libx264", quality=7, macro_block_size=16) as w:
        for s in seeds:
            result = _episode(env, policy, s, temperature, frames=True)
            for frame in result.frames:
                w.append_data(frame)
            summaries.append(result.summary())
    env.close()
    return summaries


def episode_video(policy_name: str, triplet: str, seed: int, path: Path, temperature: float = 0.0) -> dict[str, Any]:
    """Re-run one benchmark episode (same seed; a sampling policy's draws seeded by it) with frames, write its MP4
    and return its summary. The re-run may differ from the benchmark's when the thread count changes the floating
    point sums enough to change a sampled action: its ``success`` says what the video shows."""
    return _video(policy_name, triplet, [seed], path, temperature)[0]


def summarise(episodes: list[dict[str, Any]], triplets: list[str]) -> list[dict[str, Any]]:
    rows = []
    for t in triplets:
        eps = [e for e in episodes if e["triplet"] == t]
        k = sum(e["success"] for e in eps)
        lo, hi = wilson_interval(k, len(eps))
        rows.append({"triplet": t, "episodes": len(eps), "successes": k, "success_rate": k / max(1, len(eps)),
                     "ci95": [lo, hi], "stacked_at_end": sum(e["stacked_at_end"] for e in eps) / max(1, len(eps)),
                     **_stages(eps),
                     "mpo_specialist": MPO_SPECIALISTS.get(t)})
    k = sum(e["success"] for e in episodes)
    lo, hi = wilson_interval(k, len(episodes))
    rows.append({"triplet": "mean", "episodes": len(episodes), "successes": k,
                 "success_rate": k / max(1, len(episodes)), "ci95": [lo, hi],
                 "stacked_at_end": sum(e["stacked_at_end"] for e in episodes) / max(1, len(episodes)),
                 **_stages(episodes),
                 "mpo_specialist": 75.6 if all(t in MPO_SPECIALISTS for t in triplets) else None})
    return rows


STAGES = ("reached_red", "lifted_red", "red_over_blue")


def _stages(episodes: list[dict[str, Any]]) -> dict[str, float]:
    """Share of episodes that got at least this far (rollout.py's progress stages; older results lack them)."""
    return {k: sum(bool(e.get(k)) for e in episodes) / max(1, len(episodes)) for k in STAGES}


def table(rows: list[dict[str, Any]], policy: str) -> str:
    lines = [f"Policy: {policy}. Success = stacked for >= 1 s (20 steps); 95% Wilson intervals. Progress: the tool "
             "came within 5 cm of red's centre (or lifted it) / red was lifted 3 cm / lifted red came within 5 cm of blue "
             "horizontally.", "",
             "| triplet | episodes | success % | 95% CI | stacked at end % | reached red % | lifted red % | "
             "red over blue % | MPO specialist % |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mpo = "" if r["mpo_specialist"] is None else f"{r['mpo_specialist']:.1f}"
        stages = " | ".join(f"{100 * r.get(k, 0.0):.0f}" for k in STAGES)
        lines.append(f"| {r['triplet']} | {r['episodes']} | {100 * r['success_rate']:.1f} | "
                     f"{100 * r['ci95'][0]:.1f}-{100 * r['ci95'][1]:.1f} | {100 * r['stacked_at_end']:.1f} | "
                     f"{stages} | {mpo} |")
    return "\n".join(lines)


def bar_chart(rows: list[dict[str, Any]], policy: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["triplet"].replace("rgb_test_triplet", "T").replace("rgb_", "") for r in rows]
    x = np.arange(len(rows))
    rates = np.array([100 * r["success_rate"] for r in rows])
    err = np.array([[100 * (r["success_rate"] - r["ci95"][0]), 100 * (r["ci95"][1] - r["success_rate"])]
                    for r in rows]).T
    fig, ax = plt.subplots(figsize=(1.2 * len(rows) + 2, 3.5))
    ax.bar(x - 0.2, rates, 0.4, yerr=err, capsize=3, label=policy)
    mpo = [r["mpo_specialist"] for r in rows]
    if any(m is not None for m in mpo):
        ax.bar(x + 0.2, [m or 0 for m in mpo], 0.4, label="DeepMind MPO specialist (state)")
    ax.set_xticks(x, names)
    ax.set_ylabel("success %")
    ax.set_ylim(0, 105)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def model_dirs(policy: str) -> list[Path] | None:
    """The exported policy folders a policy name loads (``onnx:DIR``, ``ensemble:DIR,DIR``, under ``markov:``);
    [] for the scripted and random policies; None for a torch checkpoint (not an exported, signable folder)."""
    name = policy.split(":", 1)[1] if policy.startswith("markov:") else policy
    if name.startswith("onnx:"):
        return [Path(name.split(":", 1)[1])]
    if name.startswith("ensemble:"):
        return [Path(d) for d in name.split(":", 1)[1].split(",")]
    return None if name.startswith("torch:") else []


def check_models(policy: str, trusted_key: Path | None) -> None:
    """Load every exported policy the name uses once, through ``load_policy`` (signature when ``trusted_key`` is
    given, manifest, fields, graph); raises ValueError (ModelIntegrityError) saying why one is refused."""
    dirs = model_dirs(policy)
    if dirs is None:
        if trusted_key is not None:
            raise ValueError(f"--trusted-key checks signed ONNX exports; {policy} is a torch checkpoint, not one")
        return
    if dirs:
        from gato_robot.runtime.onnx_policy import load_policy

        for d in dirs:
            load_policy(d, trusted_key=trusted_key, providers="cpu", warmup=False, intra_op_threads=1)


def run(policy: str, triplets: list[str], episodes: int, workers: int, out: Path, seed: int = 0,
        video_episodes: int = 2, images: bool | None = None, temperature: float | None = 0.0,
        trusted_key: Path | None = None, report: eval_protocol.ReportRun | None = None,
        ledger: Path = eval_protocol.DEFAULT_LEDGER, robot: str = "panda") -> list[dict[str, Any]]:
    """``report``: a report-range run (its block's seeds; ``seed`` is ignored), checked against the ledger before
    any episode and recorded there after the last; seeds in the report range without it are refused.
    ``temperature`` None: the model's recommended sampling (``gato_robot.runtime.loader.resolve_temperature``).
    ``robot``: the simulated arm (a robot file's name or path: panda, xarm6)."""
    temperature = resolve_temperature(policy, temperature)  # the number recorded with the results
    if report is not None:
        seed = report.seeds.start
    if eval_protocol.seed_range_kind(seed, episodes) == "report" and report is None:
        raise ValueError(f"seeds {seed}-{seed + episodes - 1} are in the report range: run them with --report-block "
                         "K --lineage NAME (the ledger keeps each block to one shipping decision)")
    if report is not None:
        eval_protocol.check(eval_protocol.load_ledger(ledger), report)
    check_models(policy, trusted_key)  # a refused model stops the run here, before any worker starts
    make_policy(policy, temperature=temperature)  # fail fast on a bad policy name, before starting processes
    load_embodiment(robot)  # and on a bad robot
    images = (not needs_privileged(policy)) if images is None else images
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(seed, seed + episodes))
    size = max(1, min(10, math.ceil(episodes / (2 * workers))))  # small chunks: a live progress bar
    chunks = [(t, seeds[i:i + size]) for t in triplets for i in range(0, episodes, size)]
    start = time.time()
    results: list[dict[str, Any]] = []
    from tqdm import tqdm

    # spawn, not fork: the caller may be a trainer whose OpenMP / intra-op thread pools are not fork-safe (a forked
    # worker that runs torch there hangs forever in a futex)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        threads = max(1, (os.cpu_count() or 1) // workers)  # the workers split the cores
        futures = [pool.submit(_run_chunk, policy, t, s, images, threads, temperature, robot) for t, s in chunks]
        with tqdm(total=len(triplets) * episodes, desc=f"{policy} episodes", unit="ep") as bar:
            for f in futures:
                results += f.result()
                bar.update(len(results) - bar.n)
    rows = summarise(results, triplets)
    (out / "results.json").write_text(json.dumps(
        {"policy": policy, "temperature": temperature, "triplets": triplets, "episodes_per_triplet": episodes,
         "seed": seed, **({} if robot == "panda" else {"robot": robot}),
         "success_rule": "stacked for >= 20 consecutive control steps (1 s)", "wall_s": time.time() - start,
         "summary": rows, "episodes": results}, indent=1))
    label = policy_label(policy, temperature)
    (out / "results.md").write_text(table(rows, label) + "\n")
    bar_chart(rows, label, out / "success.png")
    if report is not None:
        eval_protocol.record(ledger, report, rows[-1]["successes"], rows[-1]["episodes"], str(out))
    if video_episodes > 0:
        _video(policy, triplets[0], seeds[:video_episodes], out / "episodes.mp4", temperature, robot)
    return rows


def merge(parts: list[Path], out: Path) -> list[dict[str, Any]]:
    """One result from benchmark runs of the same policy and temperature over disjoint seeds (e.g. seeds 0-19, then
    20-99; or pieces run on several machines): ``results.json``, ``results.md`` and ``success.png`` in ``out``."""
    runs = [load_results(p) for p in parts]
    first = runs[0]
    for p, r in zip(parts, runs):
        for key in ("policy", "temperature", "triplets"):
            if r.get(key) != first.get(key):
                raise ValueError(f"{p}: {key} {r.get(key)!r} differs from {parts[0]}'s {first.get(key)!r}")
    episodes = [e for r in runs for e in r["episodes"]]
    keys = [(e["triplet"], e["seed"]) for e in episodes]
    if len(set(keys)) != len(keys):
        raise ValueError("the runs share episodes (the same triplet and seed): merge runs over disjoint seeds")
    triplets, temperature = first["triplets"], first.get("temperature", 0.0)
    rows = summarise(episodes, triplets)
    seeds = sorted({e["seed"] for e in episodes})
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(
        {"policy": first["policy"], "temperature": temperature, "triplets": triplets,
         "episodes_per_triplet": len(episodes) // len(triplets), "seeds": [seeds[0], seeds[-1]],
         "merged_from": [str(p) for p in parts], "success_rule": first["success_rule"],
         "summary": rows, "episodes": episodes}, indent=1))
    label = policy_label(first["policy"], temperature)
    (out / "results.md").write_text(table(rows, label) + "\n")
    bar_chart(rows, label, out / "success.png")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Evaluation protocol: " + eval_protocol.RULE + " (docs/stacking.md, "
                                 "'Evaluation protocol')")
    ap.add_argument("--policy", default="expert", help="expert | feedback-expert | random | torch:<checkpoint> | onnx:<directory> | ensemble:<dir>,<dir>[,...]; "
                    "markov:<policy> restarts it every step (no history)")
    ap.add_argument("--triplets", default="test", help="test, all, or comma-separated triplet names")
    ap.add_argument("--episodes", type=int, default=100, help="episodes per triplet")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0,
                    help="first episode seed, in the selection range 0-99999 for every choice")
    ap.add_argument("--report-block", type=int, default=None, metavar="K",
                    help="report the chosen model on report block K (seeds 1_000_000_000 + 1000 K ..; a --seed inside "
                         "the block continues it in pieces, to --merge); needs --lineage; checked against and "
                         "written to --ledger")
    ap.add_argument("--lineage", default=None, help="report runs: the model family the block belongs to "
                    "(e.g. rgb_stacking_mini)")
    ap.add_argument("--paired-with", default=None, metavar="POLICY",
                    help="report runs: the block's first candidate (its policy, at this --temperature, or its "
                         "ledger identity): the shipping decision's one paired challenger")
    ap.add_argument("--report-audit", default=None, metavar="REASON",
                    help="report runs: measure already-chosen candidates after the fact; the block then serves "
                         "no shipping decision")
    ap.add_argument("--ledger", type=Path, default=eval_protocol.DEFAULT_LEDGER,
                    help="the report ledger (default: %(default)s, committed)")
    ap.add_argument("--robot", default="panda",
                    help="the simulated arm: a robot file's name (config/robots: panda, xarm6) or path; a learned "
                         "policy must have been trained on the same arm")
    ap.add_argument("--video-episodes", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/sim_benchmark"))
    ap.add_argument("--merge", nargs="+", type=Path, metavar="DIR",
                    help="instead of running: merge these benchmark folders (same policy, disjoint seeds) into --out")
    ap.add_argument("--temperature", type=float, default=None,
                    help="model policies: 0 greedy; 1 samples the actions as Gato does (each episode seeded by its "
                         "seed); default: the model's recommendation (an export's sampling.json; greedy without one)")
    ap.add_argument("--trusted-key", type=Path, default=None, metavar="PUBLIC_KEY_PEM",
                    help="refuse ONNX policies not signed by this key's private key (model.sig; gato-sign-model)")
    args = ap.parse_args(argv)
    if args.merge:
        try:
            rows = merge(args.merge, args.out)
        except (ValueError, FileNotFoundError, KeyError, json.JSONDecodeError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print((args.out / "results.md").read_text(), end="")
        print(f"wrote {args.out}/results.json, results.md, success.png ({len(rows) - 1} triplets)")
        return 0
    try:
        if args.episodes < 1 or args.workers < 1:
            raise ValueError("--episodes and --workers must be at least 1")
        triplets = objects.expand_triplets(args.triplets)
        args.temperature = resolve_temperature(args.policy, args.temperature)  # given, or the model's
        report = _report_run(args, triplets)
        if report is None and eval_protocol.seed_range_kind(args.seed, args.episodes) == "other":
            print(f"warning: seeds {args.seed}-{args.seed + args.episodes - 1} are in neither the selection range "
                  "(0-99999) nor a report block; the collection seeds (100000-5000003) are training data",
                  file=sys.stderr)
        rows = run(args.policy, triplets, args.episodes, args.workers, args.out,
                   args.seed, args.video_episodes, temperature=args.temperature, trusted_key=args.trusted_key,
                   report=report, ledger=args.ledger, robot=args.robot)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(rows, policy_label(args.policy, args.temperature)))
    print(f"wrote {args.out}/results.json, results.md, success.png" + (", episodes.mp4" if args.video_episodes else ""))
    return 0


def _report_run(args: argparse.Namespace, triplets: list[str]) -> eval_protocol.ReportRun | None:
    """The report run the options ask for (None for a selection run); ValueError on a half-given one."""
    if args.report_block is None:
        if args.lineage or args.paired_with or args.report_audit:
            raise ValueError("--lineage, --paired-with and --report-audit belong to a report run: add --report-block K")
        return None
    if args.lineage is None:
        raise ValueError("--report-block needs --lineage NAME (the model family whose shipping the block decides)")
    paired = args.paired_with
    if paired is not None and " T=" not in paired:  # a policy string: identify it as the candidate would be
        paired = eval_protocol.candidate_identity(paired, args.temperature)
    first = args.seed if args.seed >= eval_protocol.REPORT_START else None  # else the block's first seed
    return eval_protocol.ReportRun(args.report_block, args.lineage,
                                   eval_protocol.candidate_identity(args.policy, args.temperature), args.policy,
                                   args.temperature, tuple(triplets), args.episodes, first, paired,
                                   args.report_audit)


if __name__ == "__main__":
    sys.exit(main())
