"""The shared results loader (gato_robot.core.results) and the paired comparison that reads through it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from gato_robot.core.results import ResultsError, load_results, outcomes

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, episodes, **extra) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"policy": "onnx:m", **extra, "episodes": episodes}))
    return path


def test_episodes_are_normalised_and_other_fields_kept(tmp_path):
    path = write(tmp_path / "run" / "results.json",
                 [{"triplet": "rgb_test_triplet1", "seed": "3", "success": 1, "steps": 400},
                  {"triplet": "rgb_test_triplet1", "seed": 4, "success": 0}])
    for where in (path, path.parent):  # the file or the folder that holds it
        data = load_results(where)
        assert data["policy"] == "onnx:m"
        first = data["episodes"][0]
        assert first == {"triplet": "rgb_test_triplet1", "seed": 3, "success": True, "steps": 400}
        assert type(first["seed"]) is int and type(first["success"]) is bool
    assert outcomes(load_results(path)["episodes"]) == {("rgb_test_triplet1", 3): True, ("rgb_test_triplet1", 4): False}


@pytest.mark.parametrize("content, reason", [
    ("not json", "JSONDecodeError"),
    ("[1, 2]", "not an object"),
    ('{"summary": []}', "KeyError"),
    ('{"episodes": {"a": 1}}', "not a list"),
    ('{"episodes": [{"triplet": "t", "success": true}]}', "KeyError"),
    ('{"episodes": [{"triplet": "t", "seed": "x", "success": true}]}', "ValueError"),
    ('{"episodes": []}', "no episodes"),
    ('{"episodes": [{"triplet": "t", "seed": 1, "success": true}, {"triplet": "t", "seed": 1, "success": false}]}',
     "appears twice"),
    ('{"episodes": [{"triplet": "t", "seed": 1, "success": true, "variant": "none"},'
     ' {"triplet": "t", "seed": 1, "success": true, "variant": "all"}]}', "several ablation variants"),
])
def test_malformed_results_are_refused_with_the_path_and_reason(tmp_path, content, reason):
    path = tmp_path / "results.json"
    path.write_text(content)
    with pytest.raises(ResultsError, match=reason) as info:
        load_results(path)
    assert str(path) in str(info.value)


def test_missing_file_and_empty_when_allowed(tmp_path):
    with pytest.raises(ResultsError, match=r"results\.json"):
        load_results(tmp_path)  # a folder without results.json
    assert load_results(write(tmp_path / "r.json", []), allow_empty=True)["episodes"] == []


def paired_success():
    spec = importlib.util.spec_from_file_location("paired_success", ROOT / "benchmarks" / "paired_success.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_success_counts_discordant_pairs_on_shared_episodes(tmp_path, capsys):
    a = write(tmp_path / "a.json", [{"triplet": "t1", "seed": s, "success": s < 6} for s in range(10)])
    b = write(tmp_path / "b.json", [{"triplet": "t1", "seed": s, "success": s % 2 == 0} for s in range(2, 12)])
    assert paired_success().main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    # shared seeds 2-9: A wins 2-5 (4), B wins 2, 4, 6, 8 (4); only A: 3, 5; only B: 6, 8
    assert "t1: A 4/8, B 4/8" in out and "only A 2, only B 2" in out and "p = 1.000" in out
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(SystemExit, match="not a results file"):
        paired_success().main([str(a), str(bad)])
