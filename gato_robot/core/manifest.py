"""Model manifests: the sha256 of every file of an exported policy, checked before any of it is loaded.

``onnx.checker`` passes a model whose weights are all NaN, and a flipped bit in a weight file loads without
complaint (shared/reference/safety.md), so an exported policy directory carries ``manifest.json``::

    {"format": "gato_robot.onnx_policy", "format_version": 1,
     "files": {"model.onnx": {"sha256": "...", "bytes": 123}, ...}, ...everything else the runtime needs}

and :func:`verify_manifest` refuses a directory whose files are missing, truncated or changed. stdlib only.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT = "gato_robot.onnx_policy"
FORMAT_VERSION = 1
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


def verify_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """Read ``manifest.json`` and check every listed file's size and sha256; return the manifest.

    Raises ModelIntegrityError (a ValueError) naming what is wrong; nothing else in the directory is read.
    """
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise ModelIntegrityError(f"{directory}: no {MANIFEST}; export the model with `gato-export-onnx` first")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelIntegrityError(f"{path}: not valid JSON ({e})") from e
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ModelIntegrityError(
            f"{path}: format {manifest.get('format')!r} v{manifest.get('format_version')}, expected {FORMAT!r} "
            f"v{FORMAT_VERSION}"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ModelIntegrityError(f"{path}: lists no files")
    for name, entry in files.items():
        f = directory / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ModelIntegrityError(f"{path}: file name {name!r} leaves the model directory")
        if not f.is_file():
            raise ModelIntegrityError(f"{f}: listed in the manifest but missing")
        size = f.stat().st_size
        if size != entry.get("bytes"):
            raise ModelIntegrityError(f"{f}: {size} bytes, the manifest says {entry.get('bytes')} (truncated or changed)")
        digest = sha256_file(f)
        if digest != entry.get("sha256"):
            raise ModelIntegrityError(f"{f}: sha256 {digest[:16]}... differs from the manifest's (file changed)")
    return manifest
