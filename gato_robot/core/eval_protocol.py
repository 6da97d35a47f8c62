"""The evaluation protocol (issue 30): which episode seeds may choose a model, which may report it, and the ledger
that keeps each report block to one shipping decision (stdlib only).

Why: the shipped lineage (runs 9 to 31) was chosen and reported on the same seeds 0-99, and a sampled policy draws
its actions from the episode's seed, so every candidate met the same layouts and the same noise there. The best of
many candidates on one fixed sample scores above what it does on new layouts (the winner's curse): run 31's
51.8% on seeds 0-99 was its selection figure, not a measurement (docs/stacking.md, "Evaluation protocol").

- **Selection range**, seeds ``[0, 100_000)``: every choice (runs, checkpoints, temperatures, ensembles, probes,
  the trainer's in-training evaluations, whose seeds start at 1_000_000 and count as selection too). Use it freely.
- **Report range**, seeds ``[1_000_000_000, 1_001_000_000)``, in blocks of 1,000 seeds: disjoint from every seed
  this project ever used (benchmark 0-99 and 300-311, collection and DAgger 100_000 to 3_400_059, the trainer's
  evaluations from 1_000_000, the probe set 5_000_000). A report run takes one block (``--report-block K``: seeds
  from the block's first, the same for every triplet) and is written to the ledger.
- **The rule** (per lineage, per block): the first candidate run on a block owns it; the same candidate may run it
  again (reproducibility); one second candidate may run it only as the paired comparison of a shipping decision
  (``paired_with`` naming the first, the same triplets; pair them on the same seeds); any other candidate is refused and
  must open a new block. An audit (``purpose="audit"``: candidates already chosen, measured after the fact, nothing
  chosen from the result) may measure several candidates on one block, which then serves no shipping decision.

A candidate is what was chosen: the sha256 of every ``model.onnx`` a policy loads (from its manifest) and the
sampling temperature; for the scripted and random policies and torch checkpoints, the policy string.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SELECTION_SEEDS = range(0, 100_000)
REPORT_START = 1_000_000_000
REPORT_BLOCK_SIZE = 1_000
REPORT_BLOCKS = 1_000
REPORT_SEEDS = range(REPORT_START, REPORT_START + REPORT_BLOCK_SIZE * REPORT_BLOCKS)
DEFAULT_LEDGER = Path("benchmarks/report_ledger.json")  # relative to the repository root, where benchmarks run
LEDGER_FORMAT = "gato_robot.report_ledger"
PURPOSES = ("decision", "audit")

RULE = (f"Selection range: seeds {SELECTION_SEEDS.start}-{SELECTION_SEEDS.stop - 1}, for every choice (runs, "
        f"checkpoints, temperatures, ensembles). Report range: seeds {REPORT_SEEDS.start:_}-{REPORT_SEEDS.stop - 1:_} in "
        f"blocks of {REPORT_BLOCK_SIZE:,}; a report run takes --report-block K --lineage NAME (seeds from the block's first; "
        "--seed inside the block continues it in pieces) and is written to the ledger. Per lineage and block: the first candidate owns the block; it may run again; one second candidate "
        "only with --paired-with naming the first (the same triplets, run on the same seeds: the shipping "
        "decision's paired test); any other candidate is refused (exit 2): open a new block. --report-audit REASON measures "
        "already-chosen candidates on a block that then serves no shipping decision.")


class ReportRangeRefused(ValueError):
    """A report-range run the protocol does not allow; the message says what to do instead."""


def report_block_seeds(block: int) -> range:
    """Seeds of report block ``block`` (0-based)."""
    if not 0 <= block < REPORT_BLOCKS:
        raise ValueError(f"report block {block} does not exist: blocks are 0-{REPORT_BLOCKS - 1}")
    start = REPORT_START + block * REPORT_BLOCK_SIZE
    return range(start, start + REPORT_BLOCK_SIZE)


def seed_range_kind(first_seed: int, episodes: int) -> str:
    """'selection', 'report' or 'other' (e.g. the collection seeds) for the seeds ``first_seed`` ..
    ``first_seed + episodes - 1``; ValueError when they straddle two ranges or two report blocks."""
    last = first_seed + episodes - 1
    if first_seed < 0 or episodes < 1:
        raise ValueError("seeds start at 0 and a run has at least one episode")
    in_report = [s in REPORT_SEEDS for s in (first_seed, last)]
    if any(in_report) or (first_seed < REPORT_SEEDS.start and last >= REPORT_SEEDS.stop):
        if not all(in_report):
            raise ValueError(f"seeds {first_seed}-{last} straddle the report range's edge "
                             f"({REPORT_SEEDS.start:_}-{REPORT_SEEDS.stop - 1:_}): keep a run inside or outside it")
        if block_of(first_seed) != block_of(last):
            raise ValueError(f"seeds {first_seed}-{last} straddle report blocks {block_of(first_seed)} and "
                             f"{block_of(last)}: a report run stays in one block")
        return "report"
    if first_seed in SELECTION_SEEDS and last in SELECTION_SEEDS:
        return "selection"
    return "other"


def block_of(seed: int) -> int:
    if seed not in REPORT_SEEDS:
        raise ValueError(f"seed {seed} is not in the report range")
    return (seed - REPORT_START) // REPORT_BLOCK_SIZE


def _model_sha(directory: Path) -> str:
    manifest = directory / "manifest.json"
    try:
        return json.loads(manifest.read_text())["files"]["model.onnx"]["sha256"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"{manifest}: no sha256 of model.onnx to identify the candidate ({e})") from None


def candidate_identity(policy: str, temperature: float) -> str:
    """What a ledger entry names as the candidate: the models' sha256 (not their folder: a copied or moved model is
    the same candidate) with the wrappers and the temperature, e.g. ``onnx:sha256=f8ef... T=1``."""
    name, prefix = policy, ""
    if name.startswith("markov:"):
        prefix, name = "markov:", name.split(":", 1)[1]
    kind, _, rest = name.partition(":")
    if kind in ("onnx", "ensemble") and rest:
        shas = [_model_sha(Path(d)) for d in rest.split(",")]
        ident = f"{prefix}{kind}:" + ",".join(f"sha256={s}" for s in shas)
    else:
        ident = policy
    return f"{ident} T={temperature:g}"


@dataclass(frozen=True)
class ReportRun:
    """A benchmark run on the report range: its block, lineage and candidate, and why when it is an audit."""
    block: int
    lineage: str
    candidate: str
    policy: str
    temperature: float
    triplets: tuple[str, ...]
    episodes: int
    first_seed: int | None = None  # None: the block's first; a later seed of the block continues it in pieces
    paired_with: str | None = None  # the identity of the block's first candidate, for a shipping decision's pair
    audit: str | None = None  # the reason, for an audit of already-chosen candidates

    def __post_init__(self):
        if not self.lineage.strip():
            raise ValueError("a report run needs --lineage NAME (the model family whose shipping it decides)")
        seeds = report_block_seeds(self.block)
        first = seeds.start if self.first_seed is None else self.first_seed
        if first not in seeds or first + self.episodes > seeds.stop:
            raise ValueError(f"report block {self.block} is seeds {seeds.start}-{seeds.stop - 1}: seeds {first}-"
                             f"{first + self.episodes - 1} leave it")
        if self.paired_with is not None and self.audit is not None:
            raise ValueError("an audit measures already-chosen candidates; --paired-with is for a shipping "
                             "decision: give one of them")

    @property
    def purpose(self) -> str:
        return "audit" if self.audit is not None else "decision"

    @property
    def seeds(self) -> range:
        start = report_block_seeds(self.block).start if self.first_seed is None else self.first_seed
        return range(start, start + self.episodes)


def load_ledger(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The ledger's entries (none when the file does not exist yet)."""
    p = Path(path)
    if not p.exists():
        return []
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not a report ledger ({e}); restore it from git") from None
    if not isinstance(data, dict) or data.get("format") != LEDGER_FORMAT or not isinstance(data.get("entries"), list):
        raise ValueError(f"{p}: not a report ledger (format {LEDGER_FORMAT!r} with a list of entries); restore it "
                         "from git")
    return data["entries"]


def _free_block(entries: list[dict[str, Any]], lineage: str) -> int:
    used = {e["block"] for e in entries if e["lineage"] == lineage}
    return next(b for b in range(REPORT_BLOCKS) if b not in used)


def check(entries: list[dict[str, Any]], run: ReportRun) -> None:
    """Raise ReportRangeRefused when the protocol does not allow ``run`` given the ledger's ``entries``."""
    same = [e for e in entries if e["lineage"] == run.lineage and e["block"] == run.block]
    candidates = list(dict.fromkeys(e["candidate"] for e in same))
    if run.candidate in candidates:
        return  # the same candidate again on its block: a reproduction
    purposes = {e.get("purpose", "decision") for e in same}
    where = f"report block {run.block} of lineage {run.lineage!r}"
    new_block = (f"open a new block: --report-block {_free_block(entries, run.lineage)} (the first this lineage "
                 "has not used)")
    if run.audit is not None:
        if "decision" in purposes:
            raise ReportRangeRefused(f"{where} serves a shipping decision ({', '.join(candidates)}); an audit "
                                     f"takes a block of its own: {new_block}")
        return
    if "audit" in purposes:
        raise ReportRangeRefused(f"{where} was used by an audit ({len(candidates)} candidates measured on it): it "
                                 f"serves no shipping decision; {new_block}")
    if not candidates:
        return
    first = next(e for e in same if e["candidate"] == candidates[0])
    if len(candidates) >= 2:
        raise ReportRangeRefused(f"{where} already holds its shipping decision's pair: {candidates[0]} "
                                 f"({first['policy']}, {first['date']}) and {candidates[1]}; {new_block}")
    if run.paired_with is None:
        raise ReportRangeRefused(f"{where} already has results for another candidate of the lineage: "
                                 f"{candidates[0]} ({first['policy']}, {first['date']}). A different candidate on "
                                 f"the same seeds is a choice made on the report range: {new_block}, or, for the "
                                 "shipping decision's one paired comparison, --paired-with naming that candidate")
    if run.paired_with != candidates[0]:
        raise ReportRangeRefused(f"--paired-with names {run.paired_with}, but {where}'s first candidate is "
                                 f"{candidates[0]} ({first['policy']})")
    if list(run.triplets) != first["triplets"]:
        raise ReportRangeRefused(f"the paired run must cover the first candidate's triplets on {where}: "
                                 f"--triplets {','.join(first['triplets'])}")


def record(path: str | os.PathLike, run: ReportRun, successes: int, episodes: int, results: str,
           note: str | None = None) -> dict[str, Any]:
    """Append ``run``'s result to the ledger at ``path`` (created when missing); returns the entry."""
    p = Path(path)
    entries = load_ledger(p)
    entry = {"block": run.block, "lineage": run.lineage, "candidate": run.candidate, "policy": run.policy,
             "temperature": run.temperature, "purpose": run.purpose, "paired_with": run.paired_with,
             "audit": run.audit, "triplets": list(run.triplets), "first_seed": run.seeds.start,
             "episodes_per_triplet": run.episodes, "episodes": episodes, "successes": successes,
             "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
             "results": results}
    if note:
        entry["note"] = note
    data = {"format": LEDGER_FORMAT, "rule": RULE, "entries": entries + [entry]}
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(data, indent=1) + "\n")
    return entry
