"""Trainer units on CPU in-process: config, schedule, data order, checkpoints, the non-finite stop, pickle safety."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from gato_robot.core.sequence import collate
from gato_robot.model.checkpoint import load_checkpoint
from gato_robot.training import checkpointing, data, demos, hooks
from gato_robot.training.config import PRESETS, OptimSection, TrainConfig, apply_overrides, preset
from gato_robot.training.distributed import DistInfo
from gato_robot.training.optim import freeze, lr_at
from gato_robot.training.trainer import NonFiniteError, Trainer

SMALL = ["model.context=128", "run.threads=1", "run.progress=false", "run.tensorboard=false",
         "optim.warmup_steps=2", "run.eval_every=0", "run.steps=6"]


@pytest.fixture(scope="module")
def episodes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demos")
    demos.synthetic_episodes(root, episodes=6, length=24, tasks=2, seed=1)
    return root


def tiny_config(episodes: Path, out: Path, *extra: str) -> TrainConfig:
    return apply_overrides(preset("tiny-cpu"), [f"data.train={episodes}", f"run.out_dir={out}", *SMALL, *extra])


# -- config ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PRESETS)
def test_presets_are_valid_and_round_trip_through_json(name):
    cfg = preset(name)
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg


def test_overrides_are_typed_and_validated():
    cfg = apply_overrides(preset("tiny-cpu"), ["optim.lr=3e-4", "run.steps=1_000", "data.train=a,b",
                                               "model.dropout=none", "run.compile=true", "optim.schedule=constant"])
    assert cfg.optim.lr == 3e-4 and cfg.run.steps == 1000 and cfg.data.train == ("a", "b")
    assert cfg.model.dropout is None and cfg.run.compile is True and cfg.optim.schedule == "constant"
    for bad in ["optim.lr=-1", "optim.nope=1", "nope.lr=1", "lr=1", "run.steps=ten", "optim.schedule=linear",
                "data.prompt_fraction=1.5", "run.compile=maybe"]:
        with pytest.raises(ValueError):
            apply_overrides(preset("tiny-cpu"), [bad])


def test_batch_split_over_processes():
    cfg = apply_overrides(preset("79M"), [])
    assert cfg.per_rank_batch(8) == (32, 2)  # 512 / 8 ranks = 64 per rank = 2 micro-batches of 32
    with pytest.raises(ValueError, match="divisible"):
        cfg.per_rank_batch(3)


# -- schedule and freezing ---------------------------------------------------------------------------------
def test_warmup_then_cosine_to_a_tenth():
    o = OptimSection(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    lrs = [lr_at(s, o, 110) for s in range(200)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:111]))  # monotone decay
    assert lrs[60] == pytest.approx(0.55) and lrs[110] == pytest.approx(0.1) and lrs[199] == pytest.approx(0.1)
    c = dataclasses.replace(o, schedule="constant", warmup_steps=0)
    assert {lr_at(s, c, 110) for s in range(50)} == {1.0}


def test_freeze_by_pattern():
    from gato_robot.model.config import preset as model_preset
    from gato_robot.model.gato import Gato

    m = Gato(model_preset("tiny", context=32))
    names = freeze(m, ["embed.*", "blocks.0.*"])
    assert names and all(n.startswith(("embed.", "blocks.0.")) for n in names)
    assert all(p.requires_grad == (not n.startswith(("embed.", "blocks.0."))) for n, p in m.named_parameters())
    with pytest.raises(ValueError, match="matches no parameter"):
        freeze(m, ["encoder.*"])


# -- data ----------------------------------------------------------------------------------------------------
def dataset(episodes: Path, **kw) -> data.WindowDataset:
    index = data.EpisodeIndex.build([str(episodes)], max_damaged=0)
    return data.WindowDataset(index, context=128, seed=kw.pop("seed", 7), **kw)


def test_a_data_path_weight_scales_how_often_its_episodes_are_drawn(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b@x"  # "@x" is not a weight: a path that exists is taken literally
    demos.synthetic_episodes(a, episodes=4, length=24, tasks=1, seed=1)
    demos.synthetic_episodes(b, episodes=4, length=24, tasks=1, seed=2)
    plain = data.WindowDataset(data.EpisodeIndex.build([str(a), str(b)], max_damaged=0), context=128, seed=0)
    index = data.EpisodeIndex.build([str(a), f"{b}@3"], max_damaged=0)
    assert [e.weight for e in index.episodes] == [1.0] * 4 + [3.0] * 4
    weighted = data.WindowDataset(index, context=128, seed=0)
    in_b = np.array([str(b) in e.path for e in index.episodes])
    assert plain.draw_share(in_b) == pytest.approx(0.5) and weighted.draw_share(in_b) == pytest.approx(0.75)
    # the weight survives the held-out split, and the drawn sequences follow it
    train, held = index.split(0.25)
    assert len(held) == 2 and len(train) == 6
    assert all(e.weight == (3.0 if str(b) in e.path else 1.0) for e in train.episodes + held.episodes)
    draws = [weighted.episode_of(i) for i in range(4000)]
    assert 0.72 < np.mean(in_b[draws]) < 0.78
    for bad in ("0", "-1", "nan", "inf"):
        with pytest.raises(data.DataError, match="positive number"):
            data.EpisodeIndex.build([f"{a}@{bad}"], max_damaged=0)
    with pytest.raises(data.DataError, match="does not exist"):
        data.EpisodeIndex.build([f"{tmp_path / 'nowhere'}@2"], max_damaged=0)


def test_samples_are_a_pure_function_of_seed_and_index(episodes):
    a, b = dataset(episodes), dataset(episodes)
    for i in (5, 0, 123456, 5):
        x, y = a[i], b[i]
        assert all(np.array_equal(x[k], y[k]) for k in x)
    assert not np.array_equal(a[1]["tokens"], a[2]["tokens"])
    assert not np.array_equal(dataset(episodes, seed=8)[1]["tokens"], a[1]["tokens"])


def test_sequences_fill_the_context_with_whole_timesteps(episodes):
    ds = dataset(episodes, prompt_fraction=0.0)
    per_step = demos.small_spec().max_timestep_tokens  # 8 patches + 9 values + '|' + 3 actions = 21
    for i in range(20):
        s = ds[i]
        n = int(s["valid"].sum())
        assert n == (128 // per_step) * per_step  # 6 whole timesteps of 21 tokens
        assert (s["local_pos"][:n:per_step] == 0).all()
        assert s["loss_mask"][:n].sum() == 3 * (n // per_step)  # only actions are targets


def test_markov_windows_hold_one_timestep_from_anywhere_in_the_episode(episodes):
    ds = dataset(episodes, prompt_fraction=0.0, max_timesteps=1)  # what model.markov asks of the trainer
    per_step = demos.small_spec().max_timestep_tokens
    firsts = set()
    for i in range(40):
        s = ds[i]
        assert int(s["valid"].sum()) == per_step  # the rest of the 128-token context is padding
        assert s["loss_mask"].sum() == 3
        firsts.add(tuple(s["tokens"][:per_step]))
    assert len(firsts) > 20  # different timesteps, not always the first
    with pytest.raises(ValueError, match="max_timesteps"):
        dataset(episodes, max_timesteps=0)


def test_image_shift_moves_each_camera_the_same_at_every_timestep_and_never_the_held_out(episodes):
    img = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    moved = data.shift_image(img, 2, -3, 4)
    np.testing.assert_array_equal(moved[2:, :-3], img[:-2, 3:])  # content moved 2 down and 3 left
    np.testing.assert_array_equal(moved[:2, 0], np.repeat(img[:1, 3], 2, axis=0))  # the edge repeated
    np.testing.assert_array_equal(data.shift_image(img, 0, 0, 4), img)

    plain, shifted = dataset(episodes, prompt_fraction=0.0), dataset(episodes, prompt_fraction=0.0, image_shift=3)
    changed = 0
    for i in range(10):
        a, b = plain[i], shifted[i]
        np.testing.assert_array_equal(a["tokens"][~a["is_image"]], b["tokens"][~b["is_image"]])  # same window
        changed += not np.array_equal(a["pixels"], b["pixels"])
        np.testing.assert_array_equal(b["pixels"], shifted[i]["pixels"])  # a pure function of the index
    assert changed >= 7  # (0, 0) is one shift of 49
    held_out = dataset(episodes, prompt_fraction=0.0, image_shift=3, train=False)
    assert all(np.array_equal(held_out[i]["pixels"], dataset(episodes, prompt_fraction=0.0, train=False)[i]["pixels"])
               for i in range(5))
    # one shift per camera and window: every timestep of the window's camera moved alike
    spec = demos.small_spec()
    rng = np.random.default_rng(0)
    obs = [{s.name: np.full(s.shape, t, np.uint8) for s in spec.observations} for t in range(3)]
    for s in spec.observations:
        if s.kind.name == "IMAGE":
            for t, o in enumerate(obs):
                o[s.name][4, 5] = 200 + t  # a marker pixel inside the image
    out = data.shift_images(obs, spec, 2, np.random.default_rng(0))
    dys = rng.integers(-2, 3, size=2)
    name = next(s.name for s in spec.observations if s.kind.name == "IMAGE")
    for t, o in enumerate(out):
        ys, xs = np.nonzero(o[name][:, :, 0] == 200 + t)
        assert (ys.tolist(), xs.tolist()) == ([4 + dys[0]], [5 + dys[1]])
    with pytest.raises(ValueError, match="image_shift"):
        apply_overrides(preset("tiny-cpu"), ["data.image_shift=-1"])


def test_prompt_conditioning_fraction_and_masking(episodes):
    ds = dataset(episodes, prompt_fraction=0.5, prompt_tokens=48)
    per_step = demos.small_spec().max_timestep_tokens
    prompted = 0
    for i in range(200):
        s = ds[i]
        first_actions = s["loss_mask"][per_step - 3:per_step]
        if not first_actions.any():  # the first timestep is a prompt: not a target
            prompted += 1
            assert s["valid"].sum() == 2 * per_step + (128 - 2 * per_step) // per_step * per_step
    assert 0.38 < prompted / 200 < 0.62
    assert not any(not dataset(episodes, prompt_fraction=0.0)[i]["loss_mask"][18:21].any() for i in range(50))


def test_uint8_pixels_become_the_tokenizers_floats_exactly(episodes):
    from gato_robot.core.sequence import build_episode
    from gato_robot.core.tokenizer import Tokenizer
    from gato_robot.data.episodes import read_episode

    ep = read_episode(sorted(episodes.glob("*.h5"))[0])
    tok = Tokenizer(ep.spec)
    block = build_episode(tok, [ep.observation(t) for t in range(4)], [ep.action(t) for t in range(4)])
    ref = collate([block], 128)
    px = data._pixels(ref.patches[0], ref.is_image[0])
    got = data.patches_to_float(torch.from_numpy(px)[None], torch.from_numpy(ref.is_image))
    assert torch.equal(got, torch.from_numpy(ref.patches))


def test_data_order_does_not_depend_on_workers_or_ranks(episodes):
    ds = dataset(episodes)

    def batches(workers: int, rank: int, world: int, micro: int) -> list[np.ndarray]:
        sampler = data.StepBatchSampler(start_step=3, end_step=5, global_batch=8, micro_batch=micro, rank=rank,
                                        world_size=world)
        loader = data.make_loader(ds, sampler, workers=workers, prefetch=2, pin_memory=False)
        return [b["tokens"].numpy() for b in loader]

    single = np.concatenate(batches(0, 0, 1, 8))
    assert np.array_equal(single, np.concatenate(batches(2, 0, 1, 4)))
    two_ranks = [batches(0, r, 2, 4) for r in range(2)]
    per_step = [np.concatenate([two_ranks[0][s], two_ranks[1][s]]) for s in range(2)]
    assert np.array_equal(single, np.concatenate(per_step))


def test_damaged_files_are_reported_and_capped(episodes, tmp_path, caplog):
    for p in episodes.glob("*.h5"):
        (tmp_path / p.name).write_bytes(p.read_bytes())
    (tmp_path / "broken.h5").write_bytes(b"not an hdf5 file")
    index = data.EpisodeIndex.build([str(tmp_path)], max_damaged=1)
    assert len(index) == 6 and [Path(p).name for p, _ in index.damaged] == ["broken.h5"]
    assert "broken.h5" in caplog.text
    with pytest.raises(data.DataError, match="max_damaged"):
        data.EpisodeIndex.build([str(tmp_path)], max_damaged=0)


# -- checkpoints ---------------------------------------------------------------------------------------------
def test_checkpoints_verify_keep_n_and_skip_damaged(episodes, tmp_path):
    t = Trainer(tiny_config(episodes, tmp_path, "run.keep_checkpoints=2"), DistInfo())
    for step in (1, 2, 3):
        t.step = step
        t.save()
    ckpts = checkpointing.list_checkpoints(t.ckpt_root)
    assert [s for s, _ in ckpts] == [2, 3]
    assert checkpointing.latest_valid(t.ckpt_root) == ckpts[-1][1]
    (ckpts[-1][1] / "optimizer.safetensors").write_bytes(b"truncated")
    assert "sha256" in checkpointing.verify(ckpts[-1][1])
    assert checkpointing.latest_valid(t.ckpt_root) == ckpts[0][1]
    model, _ = load_checkpoint(ckpts[0][1])  # the model part is a plain model checkpoint
    assert sum(p.numel() for p in model.parameters()) == t.n_params


class _Canary:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "pwned"))


def test_a_pickle_canary_in_a_checkpoint_is_never_executed(episodes, tmp_path):
    t = Trainer(tiny_config(episodes, tmp_path / "run"), DistInfo())
    t.step = 2
    ckpt = t.save()
    fired = tmp_path / "canary_fired"
    payload = pickle.dumps(_Canary(str(fired)))
    pickle.loads(payload)  # the canary is live: unpickling it creates the file
    assert fired.exists()
    fired.unlink()
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "model.pt", "training_args.bin"):
        (ckpt / name).write_bytes(payload)
    torch.save({"x": _Canary(str(fired))}, ckpt / "trainer_state.pt")
    t2 = Trainer(tiny_config(episodes, tmp_path / "run"), DistInfo(), resume=True)
    assert t2.step == 2 and not fired.exists()
    # even if an attacker lists the pickle in the manifest, nothing reads it
    m = json.loads((ckpt / "MANIFEST.json").read_text())
    m["files"]["optimizer.pt"] = checkpointing._sha256(ckpt / "optimizer.pt")
    (ckpt / "MANIFEST.json").write_text(json.dumps(m))
    Trainer(tiny_config(episodes, tmp_path / "run"), DistInfo(), resume=True)
    assert not fired.exists()


# -- the non-finite stop -------------------------------------------------------------------------------------
def test_non_finite_loss_stops_before_the_optimizer(episodes, tmp_path):
    t = Trainer(tiny_config(episodes, tmp_path), DistInfo())
    batch = data.collate_samples([t.train_set[i] for i in range(4)])
    t.train_step([batch])  # one good step: AdamW state exists
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    moments = {k: v.clone() for k, v in t.optimizer.state_dict()["state"][0].items()}
    with torch.no_grad():
        t.model.blocks[0].mlp[0].weight[0, 0] = math.nan
    before["blocks.0.mlp.0.weight"][0, 0] = math.nan
    with pytest.raises(NonFiniteError, match="not applied"):
        t.train_step([batch])
    after = t.model.state_dict()
    assert all(torch.equal(before[k], after[k]) or k == "blocks.0.mlp.0.weight" for k in before)
    assert torch.equal(after["blocks.0.mlp.0.weight"].nan_to_num(), before["blocks.0.mlp.0.weight"].nan_to_num())
    assert all(torch.equal(v, t.optimizer.state_dict()["state"][0][k]) for k, v in moments.items())
    assert all(p.grad is None for p in t.model.parameters())


def test_export_says_clearly_when_unavailable(tmp_path, monkeypatch):
    monkeypatch.setattr(hooks, "EXPORT_MODULE", "gato_robot.model.no_such_exporter")
    with pytest.raises(hooks.ExportUnavailable, match="ONNX export unavailable"):
        hooks.export_onnx(tmp_path, tmp_path / "onnx")


def test_finetune_starts_from_the_checkpoint_with_frozen_layers_fixed(episodes, tmp_path):
    base = Trainer(tiny_config(episodes, tmp_path / "base"), DistInfo())
    base.step = 3
    ckpt = base.save()
    cfg = apply_overrides(preset("finetune"), [
        f"data.train={episodes}", f"run.out_dir={tmp_path / 'ft'}", f"model.init_from={ckpt}", "model.freeze=embed.*",
        "run.batch_size=4", "run.progress=false", "run.tensorboard=false", "run.threads=1", "data.workers=0"])
    ft = Trainer(cfg, DistInfo())
    assert ft.model.config.dropout == 0.1 and ft.model.config.context == 128 and ft.step == 0
    start = {k: v.clone() for k, v in ft.model.state_dict().items()}
    assert all(torch.equal(start[k], v) for k, v in base.model.state_dict().items())
    assert {lr_at(s, cfg.optim, cfg.run.steps) for s in (0, 100, 9999)} == {1e-5}
    ft.train_step([data.collate_samples([ft.train_set[i] for i in range(4)])])
    after = ft.model.state_dict()
    assert all(torch.equal(start[k], after[k]) == k.startswith("embed.") for k in start)


def test_finetune_into_a_markov_policy_with_a_one_timestep_context(episodes, tmp_path):
    """model.markov fine-tunes a history model (window and history have no parameters): one timestep per
    window, and the saved checkpoint's policy restarts every step."""
    base = Trainer(tiny_config(episodes, tmp_path / "base"), DistInfo())
    base.step = 1
    ckpt = base.save()
    per_step = demos.small_spec().max_timestep_tokens
    ft = Trainer(tiny_config(episodes, tmp_path / "ft", f"model.init_from={ckpt}", "model.markov=true",
                             f"model.context={per_step + 1}", "data.workers=0", "data.prompt_fraction=0"), DistInfo())
    assert ft.model.config.markov and ft.model.config.context == per_step + 1
    assert all(torch.equal(v, ft.model.state_dict()[k]) for k, v in base.model.state_dict().items())
    assert {int(ft.train_set[i]["valid"].sum()) for i in range(10)} == {per_step}
    res = ft.train_step([data.collate_samples([ft.train_set[i] for i in range(4)])])
    assert math.isfinite(res.loss)
    ft.step = 1
    assert load_checkpoint(ft.save())[0].config.markov


def test_tensorboard_scalars_and_resolved_config_are_written(episodes, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config(episodes, tmp_path, "run.steps=4", "run.log_every=2", "run.eval_every=2",
                      "run.tensorboard=true", "run.checkpoint_every=4", "run.batch_size=4")
    summary = Trainer(cfg, DistInfo()).run()
    assert summary["step"] == 4
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/loss_rgb_stacking", "train/lr", "train/grad_norm", "perf/tokens_per_s",
            "perf/data_wait_frac", "eval/loss"} <= tags
    assert TrainConfig.from_dict(json.loads((tmp_path / "train_config.json").read_text())) == cfg
    rows = [json.loads(line) for line in (tmp_path / "evaluations.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and all(math.isfinite(r["eval/loss"]) for r in rows)


def test_learning_curve_reads_evaluations_and_plots(tmp_path):
    from gato_robot.training import curve

    (tmp_path / "train_config.json").write_text(json.dumps({"run": {"sim_eval_episodes": 10}}))
    lines = [{"step": 100, "eval/loss": 3.0},
             {"step": 200, "eval/loss": 2.0, "sim/success_rgb_test_triplet1": 0.2, "sim/success_rgb_test_triplet2": 0.0,
              "sim/success_mean": 0.1},
             {"step": 200, "sim/success_rgb_test_triplet2": 0.4, "sim/success_mean": 0.3}]  # a resumed run: newest wins
    (tmp_path / "evaluations.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\nnot json\n")
    got = curve.read_curve(tmp_path)
    assert [p["step"] for p in got["points"]] == [100, 200] and "mean_success" not in got["points"][0]
    last = got["points"][1]
    assert last["success"] == {"rgb_test_triplet1": 0.2, "rgb_test_triplet2": 0.4} and last["mean_success"] == 0.3
    assert last["episodes"] == 20 and last["mean_ci95"][0] < 0.3 < last["mean_ci95"][1]
    assert curve.main([str(tmp_path)]) == 0 and (tmp_path / "learning_curve.png").stat().st_size > 1000
    assert curve.main([str(tmp_path / "missing")]) == 2


def test_learning_curve_chains_a_lineage_of_fine_tuned_runs(tmp_path):
    from gato_robot.training import curve

    first, second, other = tmp_path / "fb1", tmp_path / "fb2", tmp_path / "other"
    for run, init, rows in [(first, None, [{"step": 1000, "eval/loss": 2.0}, {"step": 3000, "eval/loss": 1.8}]),
                            (second, first / "checkpoints" / "step_000002000",
                             [{"step": 500, "eval/loss": 1.7, "sim/success_rgb_test_triplet1": 0.5}]),
                            (other, tmp_path / "elsewhere" / "checkpoints" / "step_000002000", [{"step": 1}])]:
        run.mkdir()
        (run / "train_config.json").write_text(json.dumps({"run": {"sim_eval_episodes": 4},
                                                           "model": {"init_from": str(init) if init else None}}))
        (run / "evaluations.jsonl").write_text("\n".join(map(json.dumps, rows)))
    got = curve.read_lineage([first, second])
    # run 1's step 3000 lies past the fork at 2000; run 2's step 500 is step 2500 of the lineage
    assert [(p["step"], p["run"]) for p in got["points"]] == [(1000, "fb1"), (2500, "fb2")]
    assert got["boundaries"] == [2000] and got["points"][1]["mean_success"] == 0.5
    out = tmp_path / "lineage.png"
    assert curve.main([str(first), str(second), "--out", str(out)]) == 0
    assert out.stat().st_size > 1000 and json.loads(out.with_suffix(".json").read_text())["boundaries"] == [2000]
    # a run's benchmark sits where the run ended: fb2 trained 500 steps from fb1's step 2000
    (tmp_path / "bench.json").write_text(json.dumps({"episodes": [
        {"triplet": "rgb_test_triplet1", "seed": k, "success": s} for k, s in enumerate((True, False, False, True))]}))
    assert curve.main([str(first), str(second), "--out", str(out), "--benchmark", f"fb2={tmp_path / 'bench.json'}"]) == 0
    bench = json.loads(out.with_suffix(".json").read_text())["benchmarks"]
    assert [(b["run"], b["step"], b["successes"], b["episodes"]) for b in bench] == [("fb2", 2500, 2, 4)]
    assert bench[0]["ci95"][0] < 0.5 < bench[0]["ci95"][1]
    assert curve.main([str(first), str(second), "--benchmark", f"other={tmp_path / 'bench.json'}"]) == 2
    assert curve.main([str(first), str(second), "--benchmark", f"fb2={tmp_path / 'missing.json'}"]) == 2
    assert curve.main([str(first), str(other)]) == 2  # not fine-tuned from the run before it
    assert curve.main([str(second), str(first)]) == 2  # the first of these was not fine-tuned at all


def test_every_pixel_value_survives_the_uint8_transport():
    from gato_robot.core.tokenizer import patchify

    image = np.arange(256 * 3, dtype=np.int64).reshape(16, 16, 3) % 256
    image = np.concatenate([image, np.random.default_rng(0).integers(0, 256, (16, 16, 3))], 1).astype(np.uint8)
    patches = patchify(image)[0].reshape(-1, 768)  # the tokenizer's floats, (P, 768)
    is_image = np.ones(len(patches), bool)
    px = data._pixels(patches, is_image)
    assert np.array_equal(px, image.reshape(16, 2, 16, 3).transpose(1, 0, 2, 3).reshape(2, 768))
    got = data.patches_to_float(torch.from_numpy(px), torch.from_numpy(is_image))
    assert torch.equal(got, torch.from_numpy(patches.astype(np.float32)))


def test_onnx_policy_and_manifest_are_exported_at_the_end(episodes, tmp_path):
    ok, why = hooks._function(hooks.EXPORT_MODULE, hooks.EXPORT_FUNCTION)
    if ok is None or any(__import__("importlib").util.find_spec(m) is None for m in ("onnx", "onnxruntime")):
        pytest.skip(f"ONNX exporter not available here: {why or 'onnx/onnxruntime missing'}")
    cfg = tiny_config(episodes, tmp_path, "model.context=1024", "run.steps=1", "run.batch_size=2",
                      "optim.schedule=constant", "optim.warmup_steps=0", "run.export_onnx=true")
    summary = Trainer(cfg, DistInfo()).run()
    manifest = json.loads((Path(summary["onnx"]) / "manifest.json").read_text())
    assert manifest["model"]["context"] == 1024 and (Path(summary["onnx"]) / "model.onnx").is_file()


def test_sim_benchmark_hook_maps_rows_and_never_raises(tmp_path, monkeypatch):
    import types

    calls = []

    def fake_run(policy, triplets, episodes, workers, out, seed, video_episodes=2, temperature=0.0):
        calls.append((policy, triplets, episodes, seed, video_episodes, temperature))
        return [{"triplet": t, "success_rate": 0.5} for t in triplets] + [{"triplet": "mean", "success_rate": 0.5}]

    fake = types.SimpleNamespace(run=fake_run)
    monkeypatch.setattr(hooks.importlib, "import_module",
                        lambda name: fake if name == hooks.SIM_MODULE else __import__("importlib").import_module(name))
    objects = types.SimpleNamespace(expand_triplets=lambda s: ["t1", "t2"])
    monkeypatch.setitem(__import__("sys").modules, "gato_robot.sim.objects", objects)
    got = hooks.run_sim_benchmark(tmp_path, episodes=3, seed=7, temperature=1.0)
    assert got == {"success_t1": 0.5, "success_t2": 0.5, "success_mean": 0.5}
    assert calls == [(f"torch:{tmp_path}", ["t1", "t2"], 3, 7, 0, 1.0)]
    fake.run = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("pybullet crashed"))
    assert hooks.run_sim_benchmark(tmp_path, episodes=1, seed=0) is None


def test_dropped_observations_are_never_tokenized(episodes, tmp_path):
    full = data.EpisodeIndex.build([str(episodes)], max_damaged=0)
    spec = data.first_spec(full)
    drop = ("proprio/gripper",)
    dropped = next(s for s in spec.observations if s.name == drop[0])
    index = data.EpisodeIndex.build([str(episodes)], max_damaged=0, drop_observations=drop)
    lean = data.first_spec(index)
    assert [s.name for s in lean.observations] == [s.name for s in spec.observations if s.name not in drop]
    assert lean.max_timestep_tokens == spec.max_timestep_tokens - dropped.num_tokens > 0
    with pytest.raises(data.DataError, match="drop_observations"):
        data.EpisodeIndex.build([str(episodes)], max_damaged=0, drop_observations=("proprio/nope",))
    # end to end: the trainer's model, checkpoint and samples use the lean spec
    trainer = Trainer(tiny_config(episodes, tmp_path, "run.steps=4", "data.drop_observations=proprio/gripper",
                                  "data.workers=0"), DistInfo())
    assert trainer.spec == lean
    local = np.concatenate([np.asarray(trainer.train_set[i]["local_pos"]) for i in range(4)])
    assert local.max() == lean.max_timestep_tokens - 1  # whole timesteps of the lean spec, never the full one


def test_auxiliary_targets_come_from_extras_at_each_separator_and_train_only_a_side_head(tmp_path):
    """data.aux_extras: privileged per-timestep data (sim.collect's object poses) as a regression target at each
    timestep's separator, never an input; the head is training-only (fine-tuning adds a fresh one; the policy
    and its ONNX export do not use it)."""
    from gato_robot.core import vocab
    from gato_robot.data.episodes import write_episode

    root = tmp_path / "demos"
    rng = np.random.default_rng(3)
    spec = demos.small_spec()
    truth = {}
    for i in range(4):
        ep = demos.synthetic_episode(spec, 24, rng, "task_0")
        poses = rng.normal(size=(24, 2, 7)).astype(np.float32)  # like object_poses: (T, objects, xyz + quat)
        ep.extras["poses"] = poses
        truth[i] = poses
        write_episode(root / f"episode_{i:05d}.h5", ep)
    aux = ["data.aux_extras=poses", "data.aux_take=3", "data.aux_center=0.5,0,-0.5", "data.aux_scale=0.2",
           "model.aux_outputs=6", "data.workers=0", "data.prompt_fraction=0"]
    trainer = Trainer(tiny_config(root, tmp_path / "aux", *aux), DistInfo())
    assert trainer.model.aux_head is not None and trainer.model.aux_head.out_features == 6
    sample = trainer.train_set[0]
    sep = (sample["tokens"] == vocab.SEPARATOR) & sample["valid"]
    np.testing.assert_array_equal(sample["aux_mask"], sep)  # exactly the separators of the sequence
    assert sep.sum() >= 2 and not sample["aux"][~sample["aux_mask"]].any()
    # the targets are the episode's extras of each separator's timestep: some episode and start fit them all
    targets = sample["aux"][sep]
    expected = [(truth[i][t: t + len(targets), :, :3] - np.array([0.5, 0, -0.5], np.float32)) / np.float32(0.2)
                for i in truth for t in range(24 - len(targets) + 1)]
    assert any(np.allclose(e.reshape(len(targets), 6), targets) for e in expected)
    # a step trains the head and the model through it; the action loss is reported as before
    batch = data.collate_samples([trainer.train_set[i] for i in range(4)])
    head_before = trainer.model.aux_head.weight.detach().clone()
    res = trainer.train_step([batch])
    assert math.isfinite(res.loss) and trainer.last_aux_loss is not None and trainer.last_aux_loss > 0
    assert not torch.equal(head_before, trainer.model.aux_head.weight)
    # fine-tuning a checkpoint without a head adds a fresh one; every other weight is the checkpoint's
    trainer.step = 1
    plain_ckpt = Trainer(tiny_config(root, tmp_path / "plain", "data.workers=0"), DistInfo()).save()
    ft = Trainer(tiny_config(root, tmp_path / "ft", *aux, f"model.init_from={plain_ckpt}"), DistInfo())
    plain = load_checkpoint(plain_ckpt)[0].state_dict()
    assert all(torch.equal(plain[k], v) for k, v in ft.model.state_dict().items() if not k.startswith("aux_head."))
    # the policy loads an auxiliary checkpoint and steps without the head's help
    from gato_robot.model.policy import TorchPolicy
    policy = TorchPolicy.from_checkpoint(trainer.save(), threads=1)
    obs = {s.name: np.zeros(s.shape, np.uint8) if s.kind.value == "image" else np.zeros(s.shape) for s in spec.observations}
    action, state = policy.step(obs, policy.initial_state())
    assert action.shape == (3,) and np.isfinite(action).all() and state.timestep == 1


def test_open_episode_files_follow_the_descriptor_limit(monkeypatch):
    """A worker keeps thousands of episode files open (reopening at random made a 1,293-file mixture 3x slower),
    but never more than a quarter of its open-file limit."""
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 4096))
    assert data._open_files_cap() == 256
    monkeypatch.setattr(resource, "getrlimit", lambda which: (20000, 20000))
    assert data._open_files_cap() == 5000
    monkeypatch.setattr(resource, "getrlimit", lambda which: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert data._open_files_cap() == data._OPEN_FILES >= 4096
    monkeypatch.setattr(resource, "getrlimit", lambda which: (100, 100))
    assert data._open_files_cap() == 64


def test_grasp_flag_fingers_rederives_the_recorded_flag(tmp_path):
    """data.grasp_flag=fingers trains on core.gripper's flag, not the recorded one: an episode recorded with the
    flag on while the gripper was commanded open reads as not grasping."""
    from gato_robot.core.specs import Kind, rgb_stacking_spec
    from gato_robot.core.tokenizer import Tokenizer
    from gato_robot.data.episodes import Episode, write_episode

    spec = rgb_stacking_spec(1, 16)
    steps = 6
    obs = {s.name: np.zeros((steps, *s.shape), np.uint8 if s.kind is Kind.IMAGE else np.float32)
           for s in spec.observations}
    obs["proprio/gripper"][:] = [0.04, 0.0, 1.0]  # stopped fingers, flag on as recorded ...
    obs["proprio/previous_action"][:, -1] = -255.0  # ... but the gripper was commanded open
    actions = {s.name: np.zeros((steps, *s.shape), np.float32) for s in spec.actions}
    write_episode(tmp_path / "ep", Episode(spec, obs, actions, np.zeros(steps, np.float32)))
    tok = Tokenizer(spec)
    first = {k: v[0] for k, v in obs.items()}
    recorded = tok.tokenize_observation(first).tokens
    rederived = tok.tokenize_observation({**first, "proprio/gripper": np.array([0.04, 0.0, 0.0])}).tokens
    assert not np.array_equal(recorded, rederived)
    for flag, want in (("stored", recorded), ("fingers", rederived)):
        ds = dataset(tmp_path, prompt_fraction=0.0, max_timesteps=1, grasp_flag=flag)
        for i in range(3):  # every timestep is the same: any window starts with these tokens
            np.testing.assert_array_equal(ds[i]["tokens"][: len(want)], want)
    with pytest.raises(ValueError, match="grasp_flag"):
        dataset(tmp_path, grasp_flag="contact")
