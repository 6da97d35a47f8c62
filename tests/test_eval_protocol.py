"""The evaluation protocol (issue 30): seed ranges, the report ledger's rule, and the benchmark's refusals."""

from __future__ import annotations

import json

import pytest

from gato_robot.core import eval_protocol as ep

T = ("rgb_test_triplet1", "rgb_test_triplet2")


def _run(candidate: str, block: int = 0, lineage: str = "mini", paired_with: str | None = None,
         audit: str | None = None, episodes: int = 100, triplets: tuple[str, ...] = T,
         first_seed: int | None = None) -> ep.ReportRun:
    return ep.ReportRun(block, lineage, candidate, f"onnx:runs/{candidate}", 1.0, triplets, episodes,
                        first_seed=first_seed, paired_with=paired_with, audit=audit)


def _ledger(tmp_path, *runs: ep.ReportRun):
    path = tmp_path / "ledger.json"
    for r in runs:
        ep.check(ep.load_ledger(path), r)
        ep.record(path, r, successes=10, episodes=r.episodes * len(r.triplets), results="runs/x")
    return ep.load_ledger(path)


def test_ranges_are_disjoint_from_every_seed_used_and_blocks_tile_the_report_range():
    assert ep.SELECTION_SEEDS.stop <= 100_000 <= ep.REPORT_SEEDS.start
    assert ep.REPORT_SEEDS.start > 5_000_003  # the largest collection seed (the probe set)
    assert ep.report_block_seeds(0).start == ep.REPORT_SEEDS.start
    assert ep.report_block_seeds(ep.REPORT_BLOCKS - 1).stop == ep.REPORT_SEEDS.stop
    assert ep.block_of(ep.report_block_seeds(7).start + 999) == 7
    with pytest.raises(ValueError):
        ep.report_block_seeds(ep.REPORT_BLOCKS)


def test_seed_range_kind():
    assert ep.seed_range_kind(0, 100) == "selection"
    assert ep.seed_range_kind(3_400_000, 60) == "other"
    assert ep.seed_range_kind(ep.REPORT_START, 100) == "report"
    assert ep.seed_range_kind(ep.REPORT_START + 1000, 1000) == "report"
    with pytest.raises(ValueError, match="straddle the report range"):
        ep.seed_range_kind(ep.REPORT_START - 5, 10)
    with pytest.raises(ValueError, match="straddle report blocks 0 and 1"):
        ep.seed_range_kind(ep.REPORT_START + 990, 20)


def test_first_candidate_owns_the_block_and_may_rerun(tmp_path):
    entries = _ledger(tmp_path, _run("a"), _run("a"))  # check() passed both times
    assert [e["candidate"] for e in entries] == ["a", "a"]
    assert entries[0]["first_seed"] == ep.REPORT_START and entries[0]["purpose"] == "decision"


def test_a_report_run_stays_in_its_block():
    assert _run("a", block=2, first_seed=ep.REPORT_START + 2020, episodes=20).seeds.start == ep.REPORT_START + 2020
    with pytest.raises(ValueError, match="leave it"):
        _run("a", block=2, first_seed=ep.REPORT_START + 2990, episodes=20)
    with pytest.raises(ValueError, match="leave it"):
        _run("a", block=2, first_seed=ep.REPORT_START + 1000, episodes=20)
    with pytest.raises(ValueError, match="leave it"):
        _run("a", episodes=ep.REPORT_BLOCK_SIZE + 1)
    with pytest.raises(ValueError, match="--lineage"):
        _run("a", lineage=" ")


def test_another_candidate_of_the_lineage_is_refused_naming_the_first(tmp_path):
    entries = _ledger(tmp_path, _run("a"))
    with pytest.raises(ep.ReportRangeRefused, match=r"another candidate.*a \(onnx:runs/a.*--report-block 1"):
        ep.check(entries, _run("b"))
    ep.check(entries, _run("b", block=1))  # a new block is fine
    ep.check(entries, _run("b", lineage="other"))  # another lineage's blocks are its own


def test_one_paired_challenger_then_the_block_is_closed(tmp_path):
    entries = _ledger(tmp_path, _run("a"), _run("b", paired_with="a"))
    with pytest.raises(ep.ReportRangeRefused, match="already holds its shipping decision's pair"):
        ep.check(entries, _run("c", paired_with="a"))
    ep.check(entries, _run("b", paired_with="a"))  # the pair may be reproduced
    ep.check(entries, _run("a"))


def test_paired_challenger_must_name_the_first_and_cover_its_episodes(tmp_path):
    entries = _ledger(tmp_path, _run("a"))
    with pytest.raises(ep.ReportRangeRefused, match="first candidate is a"):
        ep.check(entries, _run("b", paired_with="z"))
    with pytest.raises(ep.ReportRangeRefused, match="triplets"):
        ep.check(entries, _run("b", paired_with="a", triplets=T[:1]))


def test_audit_blocks_and_decision_blocks_do_not_mix(tmp_path):
    entries = _ledger(tmp_path, _run("a", audit="after the fact"), _run("b", audit="after the fact"),
                      _run("c", audit="after the fact"))
    with pytest.raises(ep.ReportRangeRefused, match="used by an audit"):
        ep.check(entries, _run("d"))
    with pytest.raises(ep.ReportRangeRefused, match="used by an audit"):
        ep.check(entries, _run("d", paired_with="a"))
    decided = _ledger(tmp_path / "2", _run("a", block=4))
    with pytest.raises(ep.ReportRangeRefused, match="serves a shipping decision"):
        ep.check(decided, _run("b", block=4, audit="after the fact"))


def test_candidate_is_the_model_hash_and_temperature(tmp_path):
    for name, sha in (("m1", "11" * 32), ("m2", "22" * 32)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(json.dumps({"files": {"model.onnx": {"sha256": sha}}}))
    a = ep.candidate_identity(f"onnx:{tmp_path / 'm1'}", 1.0)
    assert a == f"onnx:sha256={'11' * 32} T=1"
    assert ep.candidate_identity(f"onnx:{tmp_path / 'm1'}", 0.8) != a
    assert ep.candidate_identity(f"markov:onnx:{tmp_path / 'm1'}", 1.0) == "markov:" + a
    assert "sha256=" + "22" * 32 in ep.candidate_identity(f"ensemble:{tmp_path / 'm1'},{tmp_path / 'm2'}", 1.0)
    assert ep.candidate_identity("expert", 0.0) == "expert T=0"
    with pytest.raises(ValueError, match="no sha256"):
        ep.candidate_identity(f"onnx:{tmp_path}", 1.0)


def test_shipped_model_identity_is_its_manifest_hash():
    assert ep.candidate_identity("onnx:models/rgb_stacking_mini", 1.0).startswith("onnx:sha256=f8efefa5")


def test_benchmark_refuses_and_records(tmp_path, capsys):
    from gato_robot.sim.benchmark import main

    ledger = tmp_path / "ledger.json"
    common = ["--triplets", "rgb_test_triplet1", "--episodes", "1", "--workers", "1", "--video-episodes", "0",
              "--ledger", str(ledger)]
    # report seeds without --report-block, and a half-given report run: refused before any episode
    assert main(["--policy", "random", "--seed", str(ep.REPORT_START), "--out", str(tmp_path / "x")] + common) == 2
    assert "report range" in capsys.readouterr().err
    assert main(["--policy", "random", "--report-block", "3", "--out", str(tmp_path / "x")] + common) == 2
    assert "--lineage" in capsys.readouterr().err
    assert not ledger.exists()
    # the first candidate runs and is recorded
    assert main(["--policy", "random", "--report-block", "3", "--lineage", "t", "--out", str(tmp_path / "r")]
                + common) == 0
    (entry,) = ep.load_ledger(ledger)
    assert (entry["block"], entry["lineage"], entry["candidate"]) == (3, "t", "random T=0")
    assert json.loads((tmp_path / "r" / "results.json").read_text())["episodes"][0]["seed"] == ep.REPORT_START + 3000
    # another candidate of the lineage on the block: exit 2 naming the first, nothing run or recorded
    assert main(["--policy", "expert", "--report-block", "3", "--lineage", "t", "--out", str(tmp_path / "e")]
                + common) == 2
    err = capsys.readouterr().err
    assert "random T=0" in err and "--report-block 0" in err
    assert not (tmp_path / "e").exists() and len(ep.load_ledger(ledger)) == 1
    # a mistyped pairing is refused too
    assert main(["--policy", "expert", "--report-block", "3", "--lineage", "t", "--paired-with", "feedback-expert",
                 "--out", str(tmp_path / "e")] + common) == 2
    assert "first candidate is random T=0" in capsys.readouterr().err
