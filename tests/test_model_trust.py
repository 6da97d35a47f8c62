"""Issue 28, safety scenario 19: every manifest field checked, the fields bound to the graph, signed models.

A tiny exported policy (random weights, a small spec) through the real exporter, real ONNX Runtime and the real
OpenSSF ``model_signing`` library; no mocks. Every manifest field is edited in every way (null, a list instead,
removed, scaled by 10, a string changed, a flag flipped): each edit is refused with a ModelIntegrityError naming
the field, except ``parity`` (a record of the export's check that the runtime never reads), whose edits are
shown to leave the policy's actions unchanged.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("model_signing")

from gato_robot.core.manifest import MANIFEST, ModelIntegrityError, write_manifest  # noqa: E402
from gato_robot.core.specs import Encoding, Kind, RobotSpec, TensorSpec  # noqa: E402
from gato_robot.core.tokenizer import Tokenizer  # noqa: E402
from gato_robot.runtime.onnx_policy import load_policy  # noqa: E402
from gato_robot.runtime.trust import SIGNATURE_FILE, bind_fields, generate_key, sign_model, verify_signature  # noqa: E402
from gato_robot.runtime.trust import main as sign_main  # noqa: E402

SPEC = RobotSpec(
    name="trust",
    observations=(TensorSpec("camera/a", Kind.IMAGE, (32, 32, 3)),
                  TensorSpec("proprio/joints", Kind.CONTINUOUS, (3,), names=("j1", "j2", "j3"))),
    actions=(TensorSpec("action", Kind.CONTINUOUS, (2,), Encoding.LINEAR, low=(-1, -2), high=(1, 2),
                        names=("vx", "grip"), description="velocity, gripper"),),
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    from gato_robot.model.checkpoint import save_checkpoint
    from gato_robot.model.config import preset
    from gato_robot.model.export import export_onnx
    from gato_robot.model.gato import Gato

    torch.manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("trust")
        model = Gato(preset("tiny", context=SPEC.max_timestep_tokens + 1)).eval()
        save_checkpoint(root / "ckpt", model, SPEC, Tokenizer(SPEC).settings)
        return export_onnx(root / "ckpt", root / "policy", parity_steps=2)
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("keys")
    trusted, trusted_pub = generate_key(root / "trusted.pem")
    other, other_pub = generate_key(root / "other.pem")
    return {"trusted": trusted, "trusted_pub": trusted_pub, "other": other, "other_pub": other_pub}


def fresh(exported: Path, tmp_path: Path, name: str = "policy") -> Path:
    shutil.copytree(exported, tmp_path / name)
    return tmp_path / name


def load(path: Path, **kw: Any):
    return load_policy(path, providers="cpu", warmup=False, **kw)


def first_action(policy) -> np.ndarray:
    rng = np.random.default_rng(0)
    obs = {"camera/a": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "proprio/joints": rng.normal(size=3)}
    action, _ = policy.step(obs, policy.initial_state())
    return action


def read(path: Path) -> dict[str, Any]:
    return json.loads((path / MANIFEST).read_text())


def write(path: Path, manifest: Any) -> None:
    (path / MANIFEST).write_text(json.dumps(manifest))


# -- every field ----------------------------------------------------------------------------------------------
def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into the manifest (lists: the list and its first element; they are alike)."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list) and value:
        out += _paths(value[0], (*prefix, 0))
    return out


def _edits(value: Any) -> list[tuple[str, Any]]:
    """(what, new value) for one field; ``_REMOVED`` deletes it."""
    out: list[tuple[str, Any]] = [("removed", _REMOVED)] + ([("null", None)] if value is not None else [])
    out.append(("a list instead", list(value.values()) if isinstance(value, dict) else [value]))
    if isinstance(value, list):
        out.append(("an object instead", {str(i): v for i, v in enumerate(value)}))
    if isinstance(value, bool):
        out.append(("flipped", not value))
    elif isinstance(value, (int, float)):
        out += [("x10", value * 10 if value else 10), ("as a string", str(value))]
        if isinstance(value, int):
            out.append(("+1", value + 1))
    elif isinstance(value, str):
        out += [("changed", value + "x"), ("a number instead", 1)]
    return out


_REMOVED = object()


def _apply(manifest: dict[str, Any], path: tuple, new: Any) -> dict[str, Any]:
    m = copy.deepcopy(manifest)
    parent = m
    for key in path[:-1]:
        parent = parent[key]
    if new is _REMOVED:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return m


def test_scenario_19_every_manifest_field_edited_is_refused_or_proven_harmless(exported, tmp_path):
    path = fresh(exported, tmp_path)
    original = read(path)
    reference = first_action(load(path))
    refused, harmless = 0, 0
    for field in _paths(original):
        value = original
        for key in field:
            value = value[key]
        for what, new in _edits(value):
            write(path, _apply(original, field, new))
            name = ".".join(str(k) for k in field)
            if field[0] == "parity" and what in ("removed", "x10", "+1"):  # unbound, never read: the same actions
                assert np.array_equal(first_action(load(path)), reference), f"{name} {what} changed the actions"
                harmless += 1
                continue
            with pytest.raises(ModelIntegrityError) as err:
                load(path)
            message = str(err.value)
            named = [str(k) for k in field if isinstance(k, str)]
            assert any(k in message for k in named), f"{name} {what}: the error does not name the field: {message}"
            refused += 1
    write(path, original)
    assert np.array_equal(first_action(load(path)), reference)
    assert refused >= 390 and harmless >= 8, (refused, harmless)


@pytest.mark.parametrize("manifest", [[], [{"format": "gato_robot.onnx_policy"}], "manifest", 3, None, True])
def test_scenario_19_a_manifest_that_is_not_an_object_is_refused(exported, tmp_path, manifest):
    path = fresh(exported, tmp_path)
    write(path, manifest)
    with pytest.raises(ModelIntegrityError, match="expected an object"):
        load(path)


def test_scenario_19_the_trial_edits_are_refused_naming_the_field(exported, tmp_path):
    """The edits the trial found accepted or crashing: cache.heads null, the cache block a list, spec.observations,
    action bounds x10, the tokenizer block, markov."""
    path = fresh(exported, tmp_path)
    original = read(path)
    edits = {
        "cache.heads": lambda m: m["cache"].update(heads=None),
        "'cache'": lambda m: m.update(cache=list(m["cache"].values())),
        "spec": lambda m: m["spec"]["observations"].pop(),
        "spec.actions[0].high": lambda m: m["spec"]["actions"][0].update(
            low=[10 * v for v in m["spec"]["actions"][0]["low"]], high=[10 * v for v in m["spec"]["actions"][0]["high"]]),
        "tokenizer": lambda m: m.pop("tokenizer"),
        "tokenizer.text_model": lambda m: m["tokenizer"].update(text_model="other"),
        "model.markov": lambda m: m["model"].update(markov=not m["model"].get("markov", False)),
    }
    for name, edit in edits.items():
        m = copy.deepcopy(original)
        edit(m)
        write(path, m)
        with pytest.raises(ModelIntegrityError, match=name.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
            load(path)


def test_scenario_19_an_export_without_bound_fields_is_refused_until_bound(exported, tmp_path):
    """An export from before format 2 (no copy of the fields in the graph) cannot show an edit: refused, with the
    way out; ``gato-sign-model --bind`` binds the manifest as it is and the model loads, acting the same."""
    import onnx

    path = fresh(exported, tmp_path)
    reference = first_action(load(path))
    graph = onnx.load(str(path / "model.onnx"))
    del graph.metadata_props[:]
    onnx.save(graph, str(path / "model.onnx"))
    m = read(path)
    write_manifest(path, ["model.onnx"], **{k: v for k, v in m.items() if k not in ("files", "format", "format_version")})
    with pytest.raises(ModelIntegrityError, match="exported before format_version 2"):
        load(path)
    assert sign_main([str(path), "--bind"]) == 0
    assert np.array_equal(first_action(load(path)), reference)


# -- signatures -----------------------------------------------------------------------------------------------
def _tamper(path: Path) -> None:
    """What the trial did: change the model (here: action bounds x10, bound into the graph as an exporter would)
    and re-hash the manifest. Every integrity check passes: only a signature can tell."""
    m = read(path)
    for key in ("low", "high"):
        m["spec"]["actions"][0][key] = [10 * v for v in m["spec"]["actions"][0][key]]
    fields = {k: v for k, v in m.items() if k not in ("files", "format", "format_version", "parity")}
    bind_fields(path / "model.onnx", fields)
    write_manifest(path, ["model.onnx"], **fields, parity=m["parity"])


def test_scenario_19_signed_by_the_trusted_key_loads_and_acts_the_same(exported, keys, tmp_path):
    path = fresh(exported, tmp_path)
    reference = first_action(load(path))
    assert sign_model(path, keys["trusted"]) == path / SIGNATURE_FILE
    policy = load(path, trusted_key=keys["trusted_pub"])
    assert np.array_equal(first_action(policy), reference)
    assert np.array_equal(first_action(load(path)), reference)  # without a key: loads as before


def test_scenario_19_unsigned_or_untrusted_models_are_refused_with_a_trusted_key(exported, keys, tmp_path):
    unsigned = fresh(exported, tmp_path, "unsigned")
    load(unsigned)  # no key configured: as today
    with pytest.raises(ModelIntegrityError, match="unsigned model"):
        load(unsigned, trusted_key=keys["trusted_pub"])
    other = fresh(exported, tmp_path, "other")
    sign_model(other, keys["other"])
    with pytest.raises(ModelIntegrityError, match="signature refused"):
        load(other, trusted_key=keys["trusted_pub"])
    garbage = fresh(exported, tmp_path, "garbage")
    (garbage / SIGNATURE_FILE).write_text("{not a signature")
    with pytest.raises(ModelIntegrityError, match="signature refused"):
        load(garbage, trusted_key=keys["trusted_pub"])
    with pytest.raises(ModelIntegrityError, match="does not exist"):
        load(unsigned, trusted_key=tmp_path / "no_such_key.pub")
    with pytest.raises(ModelIntegrityError, match="cannot be used"):
        load(other, trusted_key=keys["trusted"].with_name("trusted.pem"))  # a private key is not a public key


def test_scenario_19_a_model_changed_and_rehashed_after_signing_is_refused(exported, keys, tmp_path):
    path = fresh(exported, tmp_path)
    sign_model(path, keys["trusted"])
    _tamper(path)
    policy = load(path)  # hashes and bound fields all agree: without a key nothing can tell
    assert policy.spec.actions[0].high == (10.0, 20.0)
    with pytest.raises(ModelIntegrityError, match=r"signature refused.*model\.onnx"):
        load(path, trusted_key=keys["trusted_pub"])


def test_scenario_19_any_change_to_a_signed_folder_is_refused(exported, keys, tmp_path):
    """Even the harmless parity record, or an extra file: the signature covers the folder as it was signed."""
    path = fresh(exported, tmp_path)
    sign_model(path, keys["trusted"])
    m = read(path)
    m["parity"]["steps"] = 99
    write(path, m)
    load(path)  # harmless without a key
    with pytest.raises(ModelIntegrityError, match=r"manifest\.json"):
        verify_signature(path, keys["trusted_pub"])
    path = fresh(exported, tmp_path, "extra")
    sign_model(path, keys["trusted"])
    (path / "model.onnx.data").write_bytes(b"\0" * 16)
    with pytest.raises(ModelIntegrityError, match="Extra files"):
        load(path, trusted_key=keys["trusted_pub"])


def test_signing_refuses_a_broken_model_and_the_cli_reports_in_one_line(exported, keys, tmp_path, capsys):
    path = fresh(exported, tmp_path)
    write(path, [])
    with pytest.raises(ModelIntegrityError, match="expected an object"):
        sign_model(path, keys["trusted"])
    assert not (path / SIGNATURE_FILE).exists()
    assert sign_main([str(path), "--key", str(keys["trusted"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gato-sign-model:")
    good = fresh(exported, tmp_path, "good")
    assert sign_main([str(good), "--key", str(keys["trusted"])]) == 0
    assert sign_main([str(good), "--verify", str(keys["trusted_pub"])]) == 0
    assert sign_main([str(good), "--verify", str(keys["other_pub"])]) == 2


# -- the entry points -------------------------------------------------------------------------------------------
class _Log:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, msg: str) -> None:
        self.errors.append(msg)


def test_scenario_19_the_policy_node_logs_every_refusal_in_one_line(exported, keys, tmp_path):
    pytest.importorskip("rclpy")
    from gato_robot.ros.policy_node import load_or_refuse

    original = read(exported)
    bad = {
        "a list": [],
        "cache.heads null": _apply(original, ("cache", "heads"), None),
        "spec.observations edited": _apply(original, ("spec", "observations"), original["spec"]["observations"][:1]),
        "bounds x10": _apply(original, ("spec", "actions", 0, "high"), [10.0, 20.0]),
        "no tokenizer": _apply(original, ("tokenizer",), _REMOVED),
        "markov flipped": _apply(original, ("model", "markov"), True),
        "inputs null": _apply(original, ("inputs",), None),
    }
    for i, (what, manifest) in enumerate(bad.items()):
        path = fresh(exported, tmp_path, f"bad{i}")
        write(path, manifest)
        log = _Log()
        assert load_or_refuse(log, str(path), "", providers="cpu", warmup=False) is None, what
        assert len(log.errors) == 1 and "refused to load the policy" in log.errors[0], (what, log.errors)
    for key in ("", str(keys["trusted_pub"])):  # empty folder; unsigned with a trusted key
        log = _Log()
        folder = tmp_path / "empty" if not key else exported
        folder.mkdir(exist_ok=True)
        assert load_or_refuse(log, str(folder), key, providers="cpu", warmup=False) is None
        assert len(log.errors) == 1, log.errors
    log = _Log()
    assert load_or_refuse(log, "", "") is None and len(log.errors) == 1
    signed = fresh(exported, tmp_path, "signed")
    sign_model(signed, keys["trusted"])
    log = _Log()
    assert load_or_refuse(log, str(signed), str(keys["trusted_pub"]), providers="cpu", warmup=False) is not None
    assert log.errors == []


def test_the_demo_refuses_a_missing_empty_or_untrusted_model_up_front(exported, keys, tmp_path, capsys):
    from gato_robot.cli.demo import main

    empty = tmp_path / "empty"
    empty.mkdir()
    for argv in (["--model", str(tmp_path / "missing")], ["--model", ""], ["--model", str(empty)],
                 ["--model", str(exported), "--trusted-key", str(keys["trusted_pub"])]):
        assert main([*argv, "--out", str(tmp_path / "out"), "--skip-stack", "--policy-episodes", "0",
                     "--skip-expert"]) == 2, argv
        captured = capsys.readouterr()
        assert captured.out == "", argv  # nothing ran
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("gato-demo:"), (argv, lines)


def test_the_benchmark_refuses_an_untrusted_model_before_any_episode(exported, keys, tmp_path, capsys):
    pytest.importorskip("pybullet")
    from gato_robot.sim.benchmark import main, model_dirs

    assert model_dirs("ensemble:a,b") == [Path("a"), Path("b")] and model_dirs("markov:onnx:c") == [Path("c")]
    assert model_dirs("expert") == [] and model_dirs("torch:ckpt") is None
    out = tmp_path / "bench"
    argv = ["--policy", f"onnx:{exported}", "--episodes", "1", "--workers", "1", "--out", str(out),
            "--trusted-key", str(keys["trusted_pub"])]
    assert main(argv) == 2
    assert "unsigned model" in capsys.readouterr().err
    assert not (out / "results.json").exists()
    assert main(["--policy", "torch:ckpt", *argv[2:]]) == 2
    assert "torch checkpoint" in capsys.readouterr().err


_NODE_SCRIPT = """
import sys
import rclpy
from gato_robot.ros.policy_node import PolicyNode

for model_dir, key in zip(sys.argv[1::2], sys.argv[2::2]):
    trust = ["-p", f"trusted_public_key:={key}"] if key != "-" else []
    rclpy.init(args=["--ros-args", "-p", f"model_dir:={model_dir}", "-p", "providers:=cpu", *trust])
    node = PolicyNode()
    print(f"RESULT {model_dir} policy={node.policy is not None} active={node.active}", flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
"""


@pytest.mark.ros
def test_scenario_19_the_real_policy_node_logs_each_refusal_once_and_stays_unconfigured(exported, keys, tmp_path):
    """The real lifecycle node (rclpy, autostart): each refused model gives exactly one [ERROR] line and no policy;
    a model signed by the trusted key is loaded and activated."""
    pytest.importorskip("rclpy")
    import subprocess
    import sys

    from gato_robot.ros import testing

    original = read(exported)
    cases: list[tuple[Path, str]] = []
    for i, manifest in enumerate([[], _apply(original, ("cache", "heads"), None),
                                  _apply(original, ("spec", "actions", 0, "high"), [10.0, 20.0])]):
        path = fresh(exported, tmp_path, f"bad{i}")
        write(path, manifest)
        cases.append((path, "-"))
    cases.append((exported, str(keys["trusted_pub"])))  # unsigned, a trusted key configured
    signed = fresh(exported, tmp_path, "signed")
    sign_model(signed, keys["trusted"])
    cases.append((signed, str(keys["trusted_pub"])))
    argv = [a for path, key in cases for a in (str(path), key)]
    env = testing.ros_env(testing.domain_for("test_model_trust_node"))
    done = subprocess.run([sys.executable, "-c", _NODE_SCRIPT, *argv], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = (done.stdout + done.stderr).splitlines()
    results = [line for line in lines if line.startswith("RESULT")]
    errors = [line for line in lines if "[ERROR]" in line]
    assert len(results) == len(cases), lines
    assert all("policy=False active=False" in r for r in results[:4]), results
    assert "policy=True active=True" in results[4], results
    assert len(errors) == 4 and all("refused to load the policy" in e for e in errors), errors
    for (path, _), error in zip(cases, errors):
        assert str(path) in error
    assert "unsigned model" in errors[3] and "spec.actions[0].high" in errors[2]
