"""An exported policy folder carries its source of truth: the PyTorch weights and their config (model.safetensors +
config.json, the checkpoint format), listed and hashed by the manifest beside model.onnx. They reproduce the graph's
policy, fine-tuning (--init-from) starts from them, and a folder without them still runs on the ONNX runtime."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from gato_robot.core.manifest import (
    WEIGHTS_FILES,
    ModelIntegrityError,
    check_fields,
    lists_weights,
    verify_manifest,
    write_manifest,
)
from gato_robot.core.specs import rgb_stacking_spec
from gato_robot.core.tokenizer import Tokenizer
from gato_robot.model.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
    weights_dir,
)
from gato_robot.model.config import preset as model_preset
from gato_robot.model.export import export_onnx, generated_observations, parity
from gato_robot.model.gato import Gato
from gato_robot.model.policy import TorchPolicy
from gato_robot.runtime.onnx_policy import OnnxPolicy
from gato_robot.runtime.shipped import shipped_model_dir

SPEC = rgb_stacking_spec(2, image_size=64)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny 2-camera model with trained-looking weights and an auxiliary head: its checkpoint and its export."""
    root = tmp_path_factory.mktemp("export_weights")
    torch.manual_seed(3)
    model = Gato(model_preset("tiny").replace(aux_outputs=5)).eval()
    with torch.no_grad():  # a fresh model's norms are 1 and its biases 0: make every tensor distinct
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_checkpoint(root / "ckpt", model, SPEC, Tokenizer(SPEC).settings, metadata={"run": "test"})
    export_onnx(root / "ckpt", root / "onnx", parity_steps=2)
    return root / "ckpt", root / "onnx"


def _copy(src: Path, dst: Path, drop: tuple[str, ...] = ()) -> Path:
    """A copy of an export folder without the files ``drop``, its manifest rewritten to list the rest (the bound
    fields unchanged, so the graph's binding still holds)."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    for name in drop:
        (dst / name).unlink()
    fields = {k: v for k, v in manifest.items() if k not in ("files", "format", "format_version")}
    write_manifest(dst, [n for n in manifest["files"] if n not in drop], **fields)
    return dst


def test_the_folder_lists_and_holds_the_checkpoint(exported):
    ckpt, out = exported
    manifest = verify_manifest(out)
    assert WEIGHTS_FILES == (WEIGHTS_FILE, CONFIG_FILE)  # core.manifest names model.checkpoint's files
    assert sorted(manifest["files"]) == ["config.json", "model.onnx", "model.safetensors"] and lists_weights(manifest)
    original, _ = load_checkpoint(ckpt)
    back, spec = load_checkpoint(out)  # a checkpoint loader reads the export folder
    assert back.config == original.config and spec.to_dict() == SPEC.to_dict()
    want, got = original.state_dict(), back.state_dict()
    assert set(got) == set(want) and any(k.startswith("aux_head.") for k in got)  # the training-only head too
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert read_checkpoint_config(out)["metadata"] == {"run": "test"}
    mode = (out / "model.onnx").stat().st_mode & 0o777
    assert (out / WEIGHTS_FILE).stat().st_mode & 0o777 == mode  # readable by whoever can read the graph


def test_the_folder_weights_reproduce_the_graph(exported):
    _, out = exported
    model, spec = load_checkpoint(out)
    tokenizer = Tokenizer.from_settings(spec, read_checkpoint_config(out)["tokenizer"])
    result = parity(TorchPolicy(model, spec, tokenizer=tokenizer, record_logits=True),
                    OnnxPolicy(out, providers="cpu", tokenizer=tokenizer), generated_observations(spec, 6, seed=5))
    assert result["token_agreement"] == 1.0 and result["max_rel_logit_error"] < 1e-4


def test_a_changed_weight_is_refused(exported, tmp_path):
    bad = shutil.copytree(exported[1], tmp_path / "bad")
    data = bytearray((bad / WEIGHTS_FILE).read_bytes())
    data[len(data) // 2] ^= 1
    (bad / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model.safetensors: sha256 .* differs from the manifest"):
        weights_dir(bad)
    with pytest.raises(ModelIntegrityError, match=r"model\.safetensors"):  # the runtime checks every listed file
        OnnxPolicy(bad, providers="cpu")


def test_a_folder_without_weights_runs_but_is_refused_for_fine_tuning(exported, tmp_path):
    old = _copy(exported[1], tmp_path / "old", drop=WEIGHTS_FILES)  # as exported before weights were part of it
    assert not lists_weights(verify_manifest(old))
    OnnxPolicy(old, providers="cpu")  # the ONNX runtime never needed them
    with pytest.raises(CheckpointError, match=r"without its PyTorch weights.*re-export it from the checkpoint.*"
                                              r"gato-export-onnx CHECKPOINT") as e:
        weights_dir(old)
    assert str(exported[0].resolve()) in str(e.value)  # names the checkpoint the manifest records
    assert weights_dir(exported[0]) == exported[0]  # a checkpoint folder is read as it is


def test_half_a_checkpoint_or_weights_of_another_model_are_refused(exported, tmp_path):
    half = _copy(exported[1], tmp_path / "half", drop=(CONFIG_FILE,))
    with pytest.raises(ModelIntegrityError, match=r"lists model\.safetensors without config\.json"):
        check_fields(verify_manifest(half))
    with pytest.raises(ModelIntegrityError, match=r"without config\.json"):
        OnnxPolicy(half, providers="cpu")
    other = shutil.copytree(exported[1], tmp_path / "other")
    config = json.loads((other / CONFIG_FILE).read_text())
    config["spec"]["control_hz"] = 10.0
    (other / CONFIG_FILE).write_text(json.dumps(config))
    _copy(other, tmp_path / "other2")  # re-hashed: intact, yet not the graph's spec
    with pytest.raises(CheckpointError, match=r"differs from the manifest at 'spec.control_hz'"):
        weights_dir(tmp_path / "other2")


def test_train_fine_tunes_from_the_folder(exported, tmp_path, caplog):
    from gato_robot.training import demos
    from gato_robot.training.train import main

    ckpt, out = exported
    episodes = tmp_path / "episodes"
    demos.synthetic_episodes(episodes, episodes=3, length=8, tasks=1, seed=2)
    args = ["--preset", "tiny-cpu", "--data", str(episodes), "--steps", "2"]
    tiny = [f"--set={s}" for s in ("model.aux_outputs=0", "run.threads=1", "run.progress=false",
                                   "run.tensorboard=false", "data.prompt_fraction=0", "optim.warmup_steps=1",
                                   "run.eval_every=0", "run.checkpoint_every=2")]
    assert main([*args, "--init-from", str(out), "--out", str(tmp_path / "ft"), *tiny]) == 0
    run_config = json.loads((tmp_path / "ft" / "train_config.json").read_text())
    assert run_config["model"]["init_from"] == str(out)  # the run records the folder it was given
    start = {k: v for k, v in load_checkpoint(ckpt)[0].state_dict().items() if not k.startswith("aux_head.")}
    after = load_checkpoint(tmp_path / "ft" / "checkpoints" / "step_000000002")[0].state_dict()
    assert set(after) == set(start) and not all(torch.equal(after[k], start[k]) for k in start)  # it trained
    assert max(float((after[k] - start[k]).abs().max()) for k in start) < 0.05  # from the folder's weights

    old = _copy(out, tmp_path / "old", drop=WEIGHTS_FILES)
    with caplog.at_level(logging.ERROR):
        assert main([*args, "--init-from", str(old), "--out", str(tmp_path / "ft_old"), *tiny]) == 5
    assert "without its PyTorch weights" in caplog.text and "gato-export-onnx" in caplog.text


def test_the_shipped_folder_weights_reproduce_its_graph():
    """models/rgb_stacking_mini: its weights (recovered bit-exact from its graph, see its config.json's metadata)
    give its policy's action tokens; fine-tuning starts from them."""
    shipped = shipped_model_dir()
    assert shipped is not None and weights_dir(shipped) == shipped  # listed and intact
    model, spec = load_checkpoint(shipped)
    assert model.config.name == "mini" and model.config.markov and model.config.aux_outputs == 0
    assert sum(p.numel() for p in model.parameters()) > 5_000_000
    tokenizer = Tokenizer.from_settings(spec, read_checkpoint_config(shipped)["tokenizer"])
    result = parity(TorchPolicy(model, spec, tokenizer=tokenizer, record_logits=True),
                    OnnxPolicy(shipped, providers="cpu", tokenizer=tokenizer, temperature=0.0),
                    generated_observations(spec, 8, seed=1))
    assert result["token_agreement"] == 1.0 and result["max_rel_logit_error"] < 1e-4
