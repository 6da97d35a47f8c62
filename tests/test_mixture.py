"""Issue 8 mixture: per-domain weights, deterministic domain draws, per-domain logging, held-out loss and rollouts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("minigrid")
pytest.importorskip("metaworld")

from gato_robot.domains import babyai, metaworld, vision
from gato_robot.training import data, mixture
from gato_robot.training.config import DomainConfig, TrainConfig, apply_overrides, preset
from gato_robot.training.distributed import DistInfo
from gato_robot.training.trainer import Trainer


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    r = tmp_path_factory.mktemp("mix")
    babyai.generate(r / "babyai", ("GoToRedBall",), episodes=4, seed=0)
    metaworld.generate(r / "metaworld", ("reach-v3",), episodes=3, seed=0, max_steps=30)
    vision.generate(r / "scenes", images=8, seed=0)
    (r / "text").mkdir()
    (r / "text" / "t.jsonl").write_text("\n".join(json.dumps({"text": f"line {i} of a tiny corpus."}) for i in range(6)))
    return r


def domains(root: Path, weights=(0.4, 0.3, 0.1, 0.1, 0.1)) -> str:
    kinds = [("babyai", "babyai#GoToRedBall"), ("metaworld", "metaworld#reach-v3"), ("text", "text"),
             ("caption", "scenes"), ("vqa", "scenes")]
    items = []
    for (kind, where), w in zip(kinds, weights):
        path, _, task = where.partition("#")
        items.append(f"{kind}:{root / path}@{w}" + (f"#{task}" if task else ""))
    return "data.domains=" + ",".join(items)


def config(root: Path, out: Path, *extra: str) -> TrainConfig:
    return apply_overrides(preset("tiny-multidomain"), [
        domains(root), f"run.out_dir={out}", "model.context=128", "run.threads=1", "run.progress=false",
        "run.tensorboard=false", "data.workers=0", "optim.warmup_steps=1", "run.batch_size=4", "run.eval_batches=1",
        *extra])


def test_domain_configs_parse_validate_and_round_trip(root, tmp_path):
    cfg = config(root, tmp_path)
    assert [d.kind for d in cfg.data.domains] == ["babyai", "metaworld", "text", "caption", "vqa"]
    assert cfg.data.domains[0].rollout_tasks == ("GoToRedBall",) and cfg.data.domains[1].weight == 0.3
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg
    with pytest.raises(ValueError, match="kind"):
        DomainConfig("x", "atari", ("p",))
    with pytest.raises(ValueError, match="weight"):
        DomainConfig("x", "text", ("p",), weight=0)
    with pytest.raises(ValueError, match="unique"):
        apply_overrides(cfg, [f"data.domains=text:{root}/text,text:{root}/text"])


def test_mixture_proportions_match_the_weights_and_are_deterministic(root, tmp_path):
    weights = (0.5, 0.2, 0.15, 0.1, 0.05)
    cfg = apply_overrides(config(root, tmp_path), [domains(root, weights)])
    mix, evals, names, spec, specs = mixture.build(cfg, 128)
    assert names == ["babyai", "metaworld", "text", "caption", "vqa"] and spec.name == "babyai"
    assert set(specs) == {"babyai", "metaworld"} and all(e is not None for e in evals)
    drawn = np.array([mix.domain_of(i) for i in range(2000)])
    share = np.bincount(drawn, minlength=5) / 2000
    assert np.all(np.abs(share - np.array(weights)) < 0.05), share
    for i in (0, 17, 1999):  # the sample carries its domain, and is a pure function of (seed, index)
        a, b = mix[i], mixture.build(cfg, 128)[0][i]
        assert int(a["domain"]) == drawn[i]
        assert all(np.array_equal(a[k], b[k]) for k in a)
    other = mixture.build(apply_overrides(cfg, ["run.seed=1"]), 128)[0]
    assert [other.domain_of(i) for i in range(50)] != drawn[:50].tolist()


def test_damaged_episode_files_of_a_domain_are_capped(root, tmp_path):
    bad = tmp_path / "babyai"
    shutil.copytree(root / "babyai", bad)
    files = sorted(bad.rglob("*.h5"))
    files[0].write_bytes(b"garbage")
    cfg = apply_overrides(config(root, tmp_path), [f"data.domains=babyai:{bad},text:{root / 'text'}",
                                                   "data.max_damaged=1"])
    mix, evals, *_ = mixture.build(cfg, 128)
    assert len(mix.datasets[0].index) + len(evals[0].index) == len(files) - 1  # reported (logged) and skipped
    files[1].write_bytes(b"garbage")
    with pytest.raises(data.DataError, match=r"babyai.*max_damaged=1"):
        mixture.build(cfg, 128)


def test_multidomain_training_logs_per_domain_losses_tokens_and_rollouts(root, tmp_path):
    cfg = config(root, tmp_path, "run.steps=3", "run.log_every=1", "run.eval_every=3", "run.checkpoint_every=3",
                 "run.rollout_episodes=1", "run.tensorboard=true")
    summary = Trainer(cfg, DistInfo()).run()
    assert summary["step"] == 3
    assert set(summary["rollouts"]) == {"rollout/success_babyai_GoToRedBall", "rollout/success_metaworld_reach-v3"}
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    counted = {}
    for r in rows:
        for name, c in r["domains"].items():
            counted[name] = counted.get(name, 0) + c["sequences"]
            assert c["tokens"] >= c["targets"] >= 0
    assert sum(counted.values()) == 12  # 3 steps x 4 sequences
    rollouts = [json.loads(line) for line in (tmp_path / "rollouts.jsonl").read_text().splitlines()]
    assert {r["domain"] for r in rollouts} == {"babyai", "metaworld"} and all(r["episodes"] == 1 for r in rollouts)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {f"eval/loss_{d}" for d in ("babyai", "metaworld", "text", "caption", "vqa")} <= tags
    assert any(t.startswith("data/tokens_") for t in tags) and any(t.startswith("train/loss_") for t in tags)
    assert "rollout/success_babyai_GoToRedBall" in tags


def test_a_markov_model_is_refused_for_a_mixture(root, tmp_path):
    with pytest.raises(ValueError, match=r"model\.markov"):
        Trainer(config(root, tmp_path, "model.markov=true"), DistInfo())
