"""Model manifests: the sha256 of every file of an exported policy, and every field checked before any is used.

``onnx.checker`` passes a model whose weights are all NaN, and a flipped bit in a weight file loads without
complaint (shared/reference/safety.md), so an exported policy directory carries ``manifest.json``::

    {"format": "gato_robot.onnx_policy", "format_version": 2,
     "files": {"model.onnx": {"sha256": "...", "bytes": 123}, ...}, ...everything else the runtime needs}

:func:`verify_manifest` refuses a directory whose files are missing, truncated or changed, and a manifest that is
not a JSON object. The sha256 entries cover the files, not the manifest's own fields, so a format-2 export also
binds its fields into the graph: the exporter writes them (everything but ``files``, ``format``,
``format_version`` and ``parity``) into ``model.onnx``'s metadata under :data:`BINDING_KEY`, a file the manifest
hashes. :func:`check_fields` checks every field's type, range and consistency (a manifest can be edited by hand;
``cache.heads: null`` must be refused, not crash), and :func:`check_binding` compares the fields with the copy
read back from the graph: an edited spec, action bound, tokenizer block or ``markov`` is refused, naming the
field. Only ``parity`` (a record of the export's check, written after the graph) is unbound: the runtime never
reads it. Who made a model (origin) is a signature's job: ``gato_robot.runtime.trust``. stdlib and core only.

Beside the graph an export holds its source of truth, the PyTorch weights as a checkpoint
(:data:`WEIGHTS_FILES`: ``model.safetensors`` + ``config.json``, ``gato_robot.model.checkpoint``'s format), listed
in ``files`` like the graph, so a changed weight is refused before fine-tuning starts from it (``--init-from``).
The ONNX runtime never reads them; folders exported before they were part of an export load as before.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT = "gato_robot.onnx_policy"
FORMAT_VERSION = 2  # 2: the fields are bound into model.onnx's metadata (BINDING_KEY)
READABLE_VERSIONS = (1, 2)  # verify_manifest reads both; the runtime needs 2 (gato_robot.runtime.trust)
BINDING_KEY = "gato_robot.manifest_fields"  # model.onnx metadata_props: the manifest's bound fields as JSON
UNBOUND = ("files", "format", "format_version", "parity")  # written after the graph, or about the files
WEIGHTS_FILES = ("model.safetensors", "config.json")  # the PyTorch checkpoint beside the graph (model.checkpoint)
_CHUNK = 1 << 20


class ModelIntegrityError(ValueError):
    """An exported model whose files do not match its manifest. The message names the file and what differs."""


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def file_entries(directory: Path, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    return {n: {"sha256": sha256_file(directory / n), "bytes": (directory / n).stat().st_size} for n in sorted(names)}


def write_manifest(directory: str | os.PathLike, files: Iterable[str], **fields: Any) -> Path:
    directory = Path(directory)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **fields,
                "files": file_entries(directory, files)}
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, directory / MANIFEST)
    return directory / MANIFEST


def lists_weights(manifest: dict[str, Any]) -> bool:
    """True when the manifest's ``files`` list the PyTorch weights and their config (:data:`WEIGHTS_FILES`)."""
    files = manifest.get("files")
    return isinstance(files, dict) and all(n in files for n in WEIGHTS_FILES)


def verify_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """Read ``manifest.json`` and check every listed file's size and sha256; return the manifest.

    Raises ModelIntegrityError (a ValueError) naming what is wrong; nothing else in the directory is read. The
    other fields are checked by :func:`check_fields` and :func:`check_binding`.
    """
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise ModelIntegrityError(f"{directory}: no {MANIFEST}; export the model with `gato-export-onnx` first")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelIntegrityError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(manifest, dict):
        raise ModelIntegrityError(f"{path}: the manifest is a JSON {_type(manifest)}, expected an object")
    if manifest.get("format") != FORMAT or manifest.get("format_version") not in READABLE_VERSIONS:
        raise ModelIntegrityError(
            f"{path}: manifest fields 'format' {manifest.get('format')!r} and 'format_version' "
            f"{manifest.get('format_version')!r}, expected {FORMAT!r} and one of {READABLE_VERSIONS}"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ModelIntegrityError(f"{path}: field 'files' lists no files")
    for name, entry in files.items():
        f = directory / name
        if not name or Path(name).is_absolute() or ".." in Path(name).parts:
            raise ModelIntegrityError(f"{path}: file name {name!r} leaves the model directory")
        if not isinstance(entry, dict) or not _is_int(entry.get("bytes"), 0) or not _is_sha256(entry.get("sha256")):
            raise ModelIntegrityError(f"{path}: field 'files.{name}' must be {{\"sha256\": 64 hex digits, "
                                      f"\"bytes\": an integer >= 0}}, got {entry!r}")
        if not f.is_file():
            raise ModelIntegrityError(f"{f}: listed in the manifest but missing")
        size = f.stat().st_size
        if size != entry["bytes"]:
            raise ModelIntegrityError(f"{f}: {size} bytes, the manifest says {entry['bytes']} (truncated or changed)")
        digest = sha256_file(f)
        if digest != entry["sha256"]:
            raise ModelIntegrityError(f"{f}: sha256 {digest[:16]}... differs from the manifest's (file changed)")
    return manifest


# -- the fields ---------------------------------------------------------------------------------------------
CACHE_DTYPES = ("float32", "float16", "bfloat16")


def _type(v: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), type(v).__name__)


def _is_int(v: Any, lo: int = 1) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_sha256(v: Any) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def _field(m: dict[str, Any], name: str, kind: str, where: str, block: str = "") -> Any:
    """``m[name]`` checked to be ``kind`` ('object', 'list', 'string', 'int', 'int0' (>= 0), 'number', 'bool');
    errors name the field as ``block.name``."""
    field = f"{block}.{name}" if block else name
    if name not in m:
        raise ModelIntegrityError(f"{where}: manifest field {field!r} is missing")
    v = m[name]
    ok = {"object": isinstance(v, dict), "list": isinstance(v, list), "string": isinstance(v, str),
          "int": _is_int(v, 1), "int0": _is_int(v, 0), "number": _is_number(v), "bool": isinstance(v, bool)}[kind]
    if not ok:
        want = {"int": "an integer >= 1", "int0": "an integer >= 0", "number": "a finite number",
                "bool": "true or false"}.get(kind, f"a JSON {kind}")
        got = _type(v) if v is None or isinstance(v, (dict, list)) else f"{_type(v)} {v!r:.60}"
        raise ModelIntegrityError(f"{where}: manifest field {field!r} must be {want}, got {got}")
    return v


def check_fields(manifest: dict[str, Any], where: str | os.PathLike = MANIFEST) -> None:
    """Check the type, range and consistency of every field a policy reads; raise ModelIntegrityError naming
    the first bad field (``cache.heads``, ``spec``, ...). Consistency with the graph itself (its inputs,
    outputs, shapes and the bound copy of these fields) is checked once a session exists:
    ``gato_robot.runtime.trust.check_graph``."""
    from gato_robot.core import vocab
    from gato_robot.core.specs import RobotSpec

    where = str(where)
    if not isinstance(manifest, dict):
        raise ModelIntegrityError(f"{where}: the manifest is a JSON {_type(manifest)}, expected an object")
    for name in ("opset", "initializers_checked_finite"):
        if name in manifest:
            _field(manifest, name, "int0", where)
    for name in ("onnx_version", "onnxruntime_version", "torch_version", "source_checkpoint"):
        if name in manifest:
            _field(manifest, name, "string", where)

    model = _field(manifest, "model", "object", where)
    for name in ("context", "n_layer", "n_head", "d_model", "vocab_size"):
        _field(model, name, "int", where, "model")
    for name in ("d_ff", "local_positions", "patch_channels", "patch_position_bins"):
        if name in model:
            _field(model, name, "int", where, "model")
    for name in ("aux_outputs",):
        if name in model:
            _field(model, name, "int0", where, "model")
    for name in ("dropout", "norm_eps"):
        if name in model:
            _field(model, name, "number", where, "model")
    if "markov" in model:
        _field(model, "markov", "bool", where, "model")
    if "name" in model:
        _field(model, "name", "string", where, "model")
    if model["d_model"] % model["n_head"]:
        raise ModelIntegrityError(f"{where}: model.d_model {model['d_model']} is not a multiple of model.n_head "
                                  f"{model['n_head']}")

    raw_spec = _field(manifest, "spec", "object", where)
    try:
        spec = RobotSpec.from_dict(raw_spec)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ModelIntegrityError(f"{where}: manifest field 'spec' is not a valid robot spec: "
                                  f"{type(e).__name__}: {e}") from e
    if spec.to_dict() != raw_spec:  # e.g. a shape of 64.0, a scalar bound: not what an exporter writes
        raise ModelIntegrityError(f"{where}: manifest field 'spec' is not in the exporter's form (it reads back as "
                                  f"another spec); re-export the model")

    tokenizer = _field(manifest, "tokenizer", "object", where)
    ours = {"vocab_size": vocab.VOCAB_SIZE, "num_bins": vocab.NUM_BINS, "separator": vocab.SEPARATOR,
            "patch_size": vocab.PATCH_SIZE, "mu": vocab.MU, "mu_law_m": vocab.MU_LAW_M}
    for name, value in tokenizer.items():
        if name in ours:
            kind = "number" if isinstance(ours[name], float) else "int"
            if _field(tokenizer, name, kind, where, "tokenizer") != ours[name]:
                raise ModelIntegrityError(f"{where}: manifest field 'tokenizer.{name}' is {value!r}; this code's "
                                          f"tokenizer has {ours[name]!r}")
        elif name == "text_model":
            _field(tokenizer, name, "string", where, "tokenizer")
        else:
            raise ModelIntegrityError(f"{where}: manifest field 'tokenizer.{name}' is unknown")
    if model["vocab_size"] < vocab.VOCAB_SIZE:
        raise ModelIntegrityError(f"{where}: model.vocab_size {model['vocab_size']} is smaller than the tokenizer's "
                                  f"{vocab.VOCAB_SIZE} ids")

    lr = _field(manifest, "logits_range", "list", where)
    if len(lr) != 2 or not all(_is_int(v, 0) for v in lr) or not lr[0] < lr[1] <= model["vocab_size"]:
        raise ModelIntegrityError(f"{where}: manifest field 'logits_range' must be [lo, hi] with "
                                  f"0 <= lo < hi <= {model['vocab_size']}, got {lr!r:.80}")

    for name in ("inputs", "outputs"):
        names = _field(manifest, name, "list", where)
        if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise ModelIntegrityError(f"{where}: manifest field {name!r} must list distinct tensor names")

    cache = _field(manifest, "cache", "object", where)
    for name in ("layers", "heads", "capacity", "head_dim", "max_append", "window"):
        _field(cache, name, "int", where, "cache")
    if "dtype" in cache and cache["dtype"] not in CACHE_DTYPES:
        raise ModelIntegrityError(f"{where}: manifest field 'cache.dtype' must be one of {CACHE_DTYPES}, got "
                                  f"{cache['dtype']!r:.40}")
    expected = {"layers": model["n_layer"], "heads": model["n_head"], "head_dim": model["d_model"] // model["n_head"],
                "window": model["context"], "max_append": spec.max_timestep_tokens + 1}
    layout = cache.get("layout", "ring")
    if layout == "ring":  # gato_robot.model.kv_cache.capacity_for: every key of an append stays in the window
        expected["capacity"] = expected["window"] + expected["max_append"] - 1
    elif layout == "sliding_window":  # the fused attention op (model/export_fused.py) keeps the window only
        expected["capacity"] = expected["window"]
    else:
        raise ModelIntegrityError(f"{where}: manifest field 'cache.layout' must be 'ring' or 'sliding_window', got "
                                  f"{layout!r:.40}")
    for name, value in expected.items():
        if cache[name] != value:
            raise ModelIntegrityError(f"{where}: manifest field 'cache.{name}' is {cache[name]}, the model and spec "
                                      f"make it {value}")

    files = manifest.get("files")
    listed = [n for n in WEIGHTS_FILES if isinstance(files, dict) and n in files]
    if len(listed) == 1:  # the weights and their config are one checkpoint: both or neither
        missing = next(n for n in WEIGHTS_FILES if n not in listed)
        raise ModelIntegrityError(f"{where}: manifest field 'files' lists {listed[0]} without {missing} (the PyTorch "
                                  "weights and their config go together); re-export the model")

    parity = manifest.get("parity")
    if "parity" in manifest:  # a record of the export's check; the runtime never reads it (not bound)
        if not isinstance(parity, dict):
            raise ModelIntegrityError(f"{where}: manifest field 'parity' must be a JSON object, got {_type(parity)}")
        for name, value in parity.items():
            if not _is_number(value):
                raise ModelIntegrityError(f"{where}: manifest field 'parity.{name}' must be a number, got {value!r:.40}")


def bound_fields(manifest: dict[str, Any]) -> dict[str, Any]:
    """The fields an exporter binds into the graph (:data:`BINDING_KEY`): all but :data:`UNBOUND`."""
    return {k: v for k, v in manifest.items() if k not in UNBOUND}


def binding_json(fields: dict[str, Any]) -> str:
    """The canonical JSON of ``bound_fields``, as written into the graph's metadata."""
    return json.dumps(bound_fields(fields), sort_keys=True, separators=(",", ":"))


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """The first path at which ``a`` and ``b`` differ ('spec.actions[0].high'), or None when they are equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}.{k}".lstrip(".")
            d = first_difference(a[k], b[k], f"{path}.{k}")
            if d is not None:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, f"{path}[{i}]")
            if d is not None:
                return d
        return None
    same = type(a) is type(b) and a == b
    return None if same else path.lstrip(".")


def check_binding(manifest: dict[str, Any], bound: str | None, where: str | os.PathLike = MANIFEST) -> None:
    """Compare the manifest's fields with ``bound``, the JSON the exporter wrote into the graph's metadata
    (None: the graph carries none, an export from before format 2). Raises ModelIntegrityError naming the
    first field that differs."""
    if bound is None:
        raise ModelIntegrityError(
            f"{where}: the graph carries no copy of the manifest's fields (exported before format_version 2), so an "
            "edited field cannot be detected; re-export it with `gato-export-onnx`, or bind the fields as they are "
            "now with `gato-sign-model DIR --bind` if you vouch for this manifest")
    try:
        graph_fields = json.loads(bound)
    except ValueError as e:
        raise ModelIntegrityError(f"{where}: the graph's copy of the manifest fields is not JSON ({e})") from e
    if not isinstance(graph_fields, dict):
        raise ModelIntegrityError(f"{where}: the graph's copy of the manifest fields is not a JSON object")
    diff = first_difference(bound_fields(manifest), graph_fields, "")
    if diff is not None:
        raise ModelIntegrityError(
            f"{where}: manifest field {diff!r} differs from the copy bound into the graph at export (the manifest "
            "was edited after export); re-export the model")
