"""Issue 8 domains: each dataset yields correctly ordered, correctly masked sequences; generators are deterministic;
damaged or missing files are reported with their path and skipped below a cap, beyond which loading stops."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from gato_robot.core import vocab
from gato_robot.data.episodes import read_episode

pytest.importorskip("minigrid")
pytest.importorskip("metaworld")

from gato_robot.domains import babyai, metaworld, vision
from gato_robot.domains.control import RandomPolicy, passes_return_filter
from gato_robot.domains.damage import DomainDataError
from gato_robot.domains.text import TextDataset

K = vocab.TokenKind
CONTEXT = 256


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    r = tmp_path_factory.mktemp("domains")
    babyai.generate(r / "babyai", ("GoToRedBall",), episodes=4, seed=0)
    metaworld.generate(r / "metaworld", ("reach-v3",), episodes=3, seed=0, max_steps=40)
    vision.generate(r / "scenes", images=12, seed=0)
    (r / "text").mkdir()
    long_doc = " ".join(f"word{i} the quick brown fox jumps over the lazy dog." for i in range(200))
    (r / "text" / "a.txt").write_text(long_doc)
    (r / "text" / "b.jsonl").write_text("\n".join(json.dumps({"text": f"document number {i} is short."})
                                                  for i in range(5)))
    return r


def _valid(s: dict) -> dict:
    n = int(s["valid"].sum())
    assert s["valid"][:n].all() and not s["valid"][n:].any(), "right padding only"
    return {k: (v[:n] if getattr(v, "ndim", 0) else v) for k, v in s.items()}


# -- masks and order ---------------------------------------------------------------------------------------
def test_text_samples_are_all_targets_with_local_positions_below_512(root):
    ds = TextDataset([root / "text"], context=1024, seed=0, domain_id=2)
    seen_long = False
    for i in range(10):
        s = _valid(ds[i])
        assert s["loss_mask"].all() and not s["is_image"].any() and int(s["domain"]) == 2
        assert (s["tokens"] < vocab.TEXT_VOCAB_SIZE).all()
        assert s["local_pos"].max() < vocab.MAX_TOKENS_PER_TIMESTEP
        expect = np.arange(len(s["tokens"])) % vocab.MAX_TOKENS_PER_TIMESTEP  # index inside each 512-token piece
        assert np.array_equal(s["local_pos"], expect)
        seen_long |= len(s["tokens"]) > vocab.MAX_TOKENS_PER_TIMESTEP
    assert seen_long, "the long document is cut into context-length windows, 512-token pieces"


def test_caption_samples_are_image_then_caption_with_loss_on_text_only(root):
    ds = vision.CaptionDataset([root / "scenes"], context=CONTEXT, seed=0, stream=0, domain_id=3, max_damaged=2,
                               image_size=64, text_model=None)
    captions = {c["caption"] for c in json.loads((root / "scenes" / "captions.json").read_text())["annotations"]}
    for i in range(5):
        s = _valid(ds[i])
        n_img = 16  # 64x64 -> 4x4 patches
        assert s["is_image"][:n_img].all() and not s["is_image"][n_img:].any()
        assert not s["loss_mask"][:n_img].any() and s["loss_mask"][n_img:].all()
        assert np.array_equal(s["local_pos"], np.arange(len(s["tokens"])))
        assert ds.tok.decode(s["tokens"][n_img:]) in captions


def test_vqa_samples_target_the_answer_only(root):
    ds = vision.VQADataset([root / "scenes"], context=CONTEXT, seed=0, stream=0, domain_id=4, max_damaged=2,
                           image_size=64, text_model=None)
    answers = {a["multiple_choice_answer"] for a in
               json.loads((root / "scenes" / "annotations.json").read_text())["annotations"]}
    for i in range(5):
        s = _valid(ds[i])
        text = ~s["is_image"]
        assert s["is_image"][:16].all() and text[16:].all()
        assert not s["loss_mask"][s["is_image"]].any()
        targets = s["loss_mask"]
        first = int(np.flatnonzero(targets)[0])
        assert targets[first:].all() and not targets[16:first].any(), "question (context), then the answer (targets)"
        assert ds.tok.decode(s["tokens"][16:first]).startswith("question:")
        assert ds.tok.decode(s["tokens"][first:]) in answers


def _control_dataset(path: Path, domain_id: int):
    from gato_robot.training import data

    index = data.EpisodeIndex.build([str(path)], max_damaged=0, return_fraction=0.8)
    return data.WindowDataset(index, context=CONTEXT, seed=0, prompt_fraction=0.0, domain_id=domain_id,
                              text_targets=False)


def test_babyai_timesteps_are_mission_image_separator_action_and_only_actions_are_targets(root):
    ds = _control_dataset(root / "babyai", 0)
    for i in range(4):
        s = _valid(ds[i])
        kinds = np.where(s["is_image"], K.IMAGE, -1)
        assert np.array_equal(s["loss_mask"], np.isin(np.arange(len(s["tokens"])), np.flatnonzero(
            np.r_[s["tokens"][:-1] == vocab.SEPARATOR, False]) + 1)), "targets = the one action after each '|'"
        starts = np.flatnonzero(s["local_pos"] == 0)
        for a, b in zip(starts, [*starts[1:], len(s["tokens"])]):
            step_tokens, step_img = s["tokens"][a:b], kinds[a:b] == K.IMAGE
            n_text = int(np.argmax(step_img))
            assert n_text >= 1 and (step_tokens[:n_text] < vocab.TEXT_VOCAB_SIZE).all(), "mission text first"
            assert step_img[n_text:n_text + 16].all(), "then 16 image patches"
            assert step_tokens[n_text + 16] == vocab.SEPARATOR and b - a == n_text + 18, "then '|' and one action"
            assert vocab.DISCRETE_OFFSET <= step_tokens[-1] < vocab.DISCRETE_OFFSET + babyai.NUM_ACTIONS


def test_metaworld_timesteps_are_39_state_then_4_action_targets(root):
    ds = _control_dataset(root / "metaworld", 1)
    s = _valid(ds[0])
    per_step = 39 + 1 + 4
    assert len(s["tokens"]) % per_step == 0
    mask = np.tile(np.r_[np.zeros(40, bool), np.ones(4, bool)], len(s["tokens"]) // per_step)
    assert np.array_equal(s["loss_mask"], mask)
    assert (s["tokens"][39::per_step] == vocab.SEPARATOR).all()


# -- generators --------------------------------------------------------------------------------------------
def test_control_generators_are_deterministic_given_a_seed(tmp_path):
    a = babyai.generate(tmp_path / "a", ("GoToRedBall",), episodes=2, seed=7)
    b = babyai.generate(tmp_path / "b", ("GoToRedBall",), episodes=2, seed=7)
    c = babyai.generate(tmp_path / "c", ("GoToRedBall",), episodes=1, seed=8)
    for x, y in zip(a, b):
        ex, ey = read_episode(x), read_episode(y)
        assert np.array_equal(ex.observations["image"], ey.observations["image"])
        assert np.array_equal(ex.actions["action"], ey.actions["action"]) and ex.metadata == ey.metadata
        assert ex.metadata["success"] and ex.metadata["domain"] == "babyai"
    assert read_episode(c[0]).metadata["seed"] != read_episode(a[0]).metadata["seed"]
    m1 = metaworld.generate(tmp_path / "m1", ("reach-v3",), episodes=1, seed=3, max_steps=30)
    m2 = metaworld.generate(tmp_path / "m2", ("reach-v3",), episodes=1, seed=3, max_steps=30)
    e1, e2 = read_episode(m1[0]), read_episode(m2[0])
    assert np.array_equal(e1.observations["state"], e2.observations["state"])
    assert np.array_equal(e1.actions["action"], e2.actions["action"])
    assert e1.metadata["task"] == "reach-v3" and e1.metadata["expert_return"] == e1.metadata["return"]


def test_scene_generator_is_deterministic_and_its_captions_are_true(tmp_path):
    pa, pb = vision.generate(tmp_path / "a", images=6, seed=5), vision.generate(tmp_path / "b", images=6, seed=5)
    for name in pa:
        assert pa[name].read_text() == pb[name].read_text()
    for f in sorted((tmp_path / "a" / "images").iterdir()):
        assert np.array_equal(vision.load_image(f), vision.load_image(tmp_path / "b" / "images" / f.name))
    scene = [vision.Shape("red", "square", 0, 0), vision.Shape("blue", "circle", 0, 1),
             vision.Shape("green", "triangle", 1, 0)]
    assert vision.describe(scene) == "from left to right: a blue circle on top of a red square and a green triangle"
    qa = dict(vision.questions(scene, np.random.default_rng(0)))
    assert qa["which object is on top of another?"] == "the blue circle"
    assert qa["what shape is the green object?"] == "triangle" and qa["how many objects are there?"] == "three"
    img = vision.render_scene(scene, 64)
    red, blue = np.all(img == vision.COLOURS["red"], -1), np.all(img == vision.COLOURS["blue"], -1)
    assert np.flatnonzero(blue.any(1)).max() < np.flatnonzero(red.any(1)).min(), "the circle is drawn above"


# -- Gato's filter -----------------------------------------------------------------------------------------
def test_return_filter_keeps_80_percent_of_the_expert():
    metas = [{"return": 10.0, "expert_return": 10.0}, {"return": 7.9}, {"return": 8.0}, {"return": 2.0}, {}]
    assert passes_return_filter(metas, 0.8) == [True, False, True, False, True]
    assert passes_return_filter(metas, 0.0) == [True] * 5
    own = [{"return": 5.0, "expert_return": 5.0}, {"return": 9.0, "expert_return": 9.0}]
    assert passes_return_filter(own, 0.8) == [True, True], "an expert episode is judged against its own setting"


# -- damaged and missing files -----------------------------------------------------------------------------
def test_damaged_text_files_are_reported_and_capped(root, tmp_path, caplog):
    (tmp_path / "bad.jsonl").write_text('{"text": "fine line here"}\n{not json\n')
    missing = tmp_path / "missing.txt"
    with caplog.at_level(logging.WARNING):
        ds = TextDataset([root / "text", tmp_path / "bad.jsonl", missing], context=64, seed=0, max_damaged=2)
    assert str(tmp_path / "bad.jsonl") in caplog.text and str(missing) in caplog.text
    assert len(ds.damage.damaged) == 2 and len(ds) == 6
    with pytest.raises(DomainDataError, match="max_damaged=1"):
        TextDataset([root / "text", tmp_path / "bad.jsonl", missing], context=64, seed=0, max_damaged=1)


def test_damaged_images_are_reported_skipped_then_stop_the_run(root, tmp_path, caplog):
    import shutil

    scenes = tmp_path / "scenes"
    shutil.copytree(root / "scenes", scenes)
    files = sorted((scenes / "images").iterdir())
    files[0].write_bytes(b"not a png")
    files[1].unlink()
    kw = dict(context=CONTEXT, seed=0, stream=0, domain_id=3, image_size=64, text_model=None)
    with caplog.at_level(logging.WARNING):
        ds = vision.CaptionDataset([scenes], max_damaged=2, **kw)
        for i in range(60):
            ds[i]
    assert set(ds.damage.damaged) == {str(files[0])}, "an undecodable image is reported when drawn"
    assert "1 missing image files: their 1 entries skipped" in caplog.text, "a missing one is skipped at load"
    assert str(files[0]) in caplog.text and str(files[1]) in caplog.text
    assert str(files[1]) not in {e[0] for e in ds.entries}
    files[2].write_bytes(b"not a png either")
    ds = vision.CaptionDataset([scenes], max_damaged=1, **kw)
    with pytest.raises(DomainDataError, match="max_damaged=1"):
        for i in range(60):
            ds[i]


def test_random_policy_baseline_runs_through_the_rollout_code():
    r = babyai.rollout(RandomPolicy(babyai.spec(), seed=0), "GoToRedBall", episodes=2)
    assert r.episodes == 2 and 0 <= r.success_rate <= 1 and r.mean_steps > 0
    r = metaworld.rollout(RandomPolicy(metaworld.spec(), seed=0), "reach-v3", episodes=1, max_steps=10)
    assert r.mean_steps == 10 and r.successes == 0
