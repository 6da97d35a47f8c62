"""Recovering a checkpoint from an exported ONNX policy (gato_robot.model.from_onnx), and fine-tuning from one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from gato_robot.core.specs import rgb_stacking_spec
from gato_robot.core.tokenizer import Tokenizer
from gato_robot.model.checkpoint import load_checkpoint, save_checkpoint
from gato_robot.model.config import preset as model_preset
from gato_robot.model.export import export_onnx
from gato_robot.model.from_onnx import import_onnx, is_onnx_policy_dir, main, weights_from_graph
from gato_robot.model.gato import Gato

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "rgb_stacking_mini"


def _export(root: Path, *, trained_looking: bool) -> tuple[Path, Path]:
    torch.manual_seed(3)
    spec = rgb_stacking_spec(2, image_size=64)
    model = Gato(model_preset("tiny").replace(aux_outputs=5)).eval()
    if trained_looking:  # a fresh model's norms are 1 and 0 and its biases 0: make every tensor distinct
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
    save_checkpoint(root / "ckpt", model, spec, Tokenizer(spec).settings)
    export_onnx(root / "ckpt", root / "onnx", parity_steps=2)
    return root / "ckpt", root / "onnx"


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny 2-camera model with trained-looking weights (no two tensors equal), its checkpoint and export."""
    return _export(tmp_path_factory.mktemp("import"), trained_looking=True)


@pytest.fixture(scope="module")
def exported_fresh(tmp_path_factory) -> tuple[Path, Path]:
    """The same at initialisation: equal tensors stored once in the graph, zero biases folded away."""
    return _export(tmp_path_factory.mktemp("import_fresh"), trained_looking=False)


@pytest.mark.parametrize("which", ["exported", "exported_fresh"])
def test_import_recovers_every_weight_exactly(which, request, tmp_path):
    ckpt, onnx_dir = request.getfixturevalue(which)
    assert is_onnx_policy_dir(onnx_dir) and not is_onnx_policy_dir(ckpt)
    out = import_onnx(onnx_dir, tmp_path / "back", parity_steps=3)
    original, _ = load_checkpoint(ckpt)
    back, spec = load_checkpoint(out)
    assert back.config == original.config.replace(aux_outputs=0)  # the training-only head is not in the graph
    want = {k: v for k, v in original.state_dict().items() if not k.startswith("aux_head.")}
    got = back.state_dict()
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want), [k for k in want if not torch.equal(got[k], want[k])]
    config = json.loads((out / "config.json").read_text())
    assert config["metadata"]["parity"]["token_agreement"] == 1.0
    assert spec.to_dict() == json.loads((ckpt / "config.json").read_text())["spec"]


def test_import_names_what_it_cannot_find(exported):
    import onnx

    graph = onnx.load(str(exported[1] / "model.onnx")).graph
    model = load_checkpoint(exported[0])[0]
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    modules = {name: type(m) for name, m in model.named_modules()}
    with pytest.raises(ValueError, match=r"aux_head.weight: not found"):
        weights_from_graph(graph, expected, modules)  # the head was never exported
    shapes = {k: v for k, v in expected.items() if not k.startswith("aux_head.")}
    assert set(weights_from_graph(graph, shapes, modules)) == set(shapes)
    shapes["blocks.0.attn.qkv.weight"] = (7, 7)
    with pytest.raises(ValueError, match=r"blocks.0.attn.qkv.weight: shape"):
        weights_from_graph(graph, shapes, modules)
    # without the module types the folded weights (transposed Linear weights) cannot be found
    with pytest.raises(ValueError, match=r"blocks.0.mlp.0.weight: not found"):
        weights_from_graph(graph, shapes)


def test_import_refuses_what_is_not_an_onnx_policy(exported, tmp_path, capsys):
    assert main([str(exported[0]), str(tmp_path / "x")]) == 1
    assert "not an ONNX policy directory" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_the_shipped_model_imports_and_reproduces_its_policy(tmp_path):
    """models/rgb_stacking_mini: the default policy, fine-tunable although only its ONNX graph ships."""
    out = import_onnx(SHIPPED, tmp_path / "mini", parity_steps=4)
    model, _ = load_checkpoint(out)
    assert model.config.name == "mini" and model.config.markov
    assert sum(p.numel() for p in model.parameters()) > 5_000_000
    assert json.loads((out / "config.json").read_text())["metadata"]["parity"]["max_rel_logit_error"] < 1e-4


def test_trainer_fine_tunes_from_an_onnx_policy_directory(exported_fresh, tmp_path):
    from gato_robot.training import data, demos
    from gato_robot.training.config import apply_overrides, preset
    from gato_robot.training.distributed import DistInfo
    from gato_robot.training.trainer import Trainer

    ckpt, onnx_dir = exported_fresh
    episodes = tmp_path / "episodes"
    demos.synthetic_episodes(episodes, episodes=3, length=8, tasks=1, seed=2)
    cfg = apply_overrides(preset("tiny-cpu"), [
        f"data.train={episodes}", f"run.out_dir={tmp_path / 'ft'}", f"model.init_from={onnx_dir}",
        "model.aux_outputs=0", "run.threads=1", "run.progress=false", "run.tensorboard=false", "data.workers=0",
        "data.prompt_fraction=0", "run.steps=2", "optim.warmup_steps=1"])
    ft = Trainer(cfg, DistInfo())
    assert (tmp_path / "ft" / "init_from_onnx" / "model.safetensors").is_file()
    assert ft.cfg.model.init_from == str(onnx_dir)  # the run's config keeps the folder it was given
    want = {k: v for k, v in load_checkpoint(ckpt)[0].state_dict().items() if not k.startswith("aux_head.")}
    assert all(torch.equal(ft.model.state_dict()[k], v) for k, v in want.items())
    res = ft.train_step([data.collate_samples([ft.train_set[i] for i in range(2)])])
    assert np.isfinite(res.loss)
