"""Trust in an exported policy: integrity, consistent fields, and origin (a signature), checked before it acts.

1. Integrity (``gato_robot.core.manifest.verify_manifest``): every listed file's size and sha256.
2. Fields (``check_fields``, then :func:`check_graph` once a session exists): every manifest field's type, range
   and consistency; the fields equal the copy the exporter bound into ``model.onnx``'s metadata (a file step 1
   hashes), so an edited spec, action bound, tokenizer block or ``markov`` is refused; the session's inputs,
   outputs, cache shapes and logits width match the manifest.
3. Origin (:func:`verify_signature`): the sha256 manifest proves that files are intact, not who made them:
   anyone can change ``model.onnx`` and re-hash the manifest. With a trusted public key configured, the
   directory must carry ``model.sig``, an OpenSSF model-signing (``model_signing``, PyPI ``model-signing``)
   signature made with the matching elliptic-curve private key over every file of the directory (the
   manifest included); an unsigned, re-hashed or otherwise signed model is refused. Without a key, models load
   as before (steps 1 and 2 only).

:func:`open_model` runs steps 3, 1 and the session-free part of 2 in that order: the one loader
``OnnxPolicy`` (and so the policy node, the benchmark and the demo) goes through. ``model_signing`` and ``onnx``
are imported lazily: a robot computer without a trusted key needs neither.

    gato-sign-model --generate-key KEY.pem          # KEY.pem (private, mode 0600) and KEY.pub (public)
    gato-sign-model DIR --key KEY.pem               # DIR/model.sig
    gato-sign-model DIR --verify KEY.pub            # what the runtime checks, without loading the model
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gato_robot.core.manifest import (
    BINDING_KEY,
    MANIFEST,
    ModelIntegrityError,
    binding_json,
    check_binding,
    check_fields,
    verify_manifest,
)

log = logging.getLogger(__name__)

SIGNATURE_FILE = "model.sig"
ONNX_FILE = "model.onnx"
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(bfloat16)": "bfloat16"}


def _import_model_signing() -> Any:
    try:
        import model_signing
    except ImportError as e:
        raise ModelIntegrityError(
            "a trusted key is configured but the model-signing package is missing: pip install -e .[signing]"
        ) from e
    return model_signing


# -- 1 and 2: the manifest ------------------------------------------------------------------------------------
def open_model(directory: str | os.PathLike, trusted_key: str | os.PathLike | None = None) -> dict[str, Any]:
    """Everything that can be checked before a session exists: the signature (when ``trusted_key`` is set), the
    files' sha256, every field. Returns the manifest; raises ModelIntegrityError (a ValueError) naming what is
    wrong."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelIntegrityError(f"{directory}: no such model directory")
    if trusted_key:
        verify_signature(directory, trusted_key)
    manifest = verify_manifest(directory)  # before any file is parsed
    check_fields(manifest, directory / MANIFEST)
    if ONNX_FILE not in manifest["files"]:
        raise ModelIntegrityError(f"{directory}: the manifest does not list {ONNX_FILE}")
    return manifest


def check_graph(manifest: dict[str, Any], session: Any, where: str | os.PathLike) -> None:
    """Compare the manifest with the ONNX Runtime session made from its graph: the fields bound at export, the
    input and output names, the cache tensors' shapes and dtype, the logits width. Raises ModelIntegrityError."""
    check_binding(manifest, session.get_modelmeta().custom_metadata_map.get(BINDING_KEY), where)
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    for field, names in (("inputs", list(inputs)), ("outputs", list(outputs))):
        if manifest[field] != names:
            raise ModelIntegrityError(f"{where}: manifest field {field!r} is {manifest[field]}, the graph's are {names}")
    cache = manifest["cache"]
    shape = [1, cache["heads"], cache["capacity"], cache["head_dim"]]
    dtype = cache.get("dtype", "float32")
    caches = [inputs[n] for n in inputs if n.startswith("past_")] + [outputs[n] for n in outputs
                                                                     if n.startswith("present_")]
    if len(caches) != 4 * cache["layers"]:
        raise ModelIntegrityError(f"{where}: the graph has {len(caches) // 2} cache inputs, manifest field "
                                  f"'cache.layers' {cache['layers']} makes {2 * cache['layers']}")
    for t in caches:
        if [d if isinstance(d, int) else None for d in t.shape] != shape:
            raise ModelIntegrityError(f"{where}: the graph's {t.name} has shape {t.shape}, manifest field 'cache' "
                                      f"makes it {shape}")
        if _ORT_DTYPES.get(t.type) != dtype:
            raise ModelIntegrityError(f"{where}: the graph's {t.name} is {t.type}, manifest field 'cache.dtype' "
                                      f"says {dtype}")
    lo, hi = manifest["logits_range"]
    logits = outputs.get("logits")
    if logits is None or logits.shape[-1] != hi - lo:
        width = None if logits is None else logits.shape[-1]
        raise ModelIntegrityError(f"{where}: the graph's logits have width {width}, manifest field 'logits_range' "
                                  f"{[lo, hi]} makes {hi - lo}")


def bind_fields(onnx_path: str | os.PathLike, fields: dict[str, Any]) -> None:
    """Write the manifest's bound fields into the graph's metadata (:data:`BINDING_KEY`), before the manifest
    hashes the file. External data files are left as they are. Needs ``onnx`` (the export extra)."""
    import onnx

    path = Path(onnx_path)
    model = onnx.load(str(path), load_external_data=False)
    props = [p for p in model.metadata_props if p.key != BINDING_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    model.metadata_props.add(key=BINDING_KEY, value=binding_json(fields))
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)


def bind_directory(directory: str | os.PathLike) -> Path:
    """Bind the fields of an export made before format 2 as its manifest has them now, and rewrite the manifest
    (format 2, the new sha256). The caller vouches for the manifest: nothing can tell an edited field now."""
    from gato_robot.core.manifest import UNBOUND, write_manifest

    directory = Path(directory)
    manifest = verify_manifest(directory)
    check_fields(manifest, directory / MANIFEST)
    if ONNX_FILE not in manifest["files"]:
        raise ModelIntegrityError(f"{directory}: the manifest does not list {ONNX_FILE}")
    fields = {k: v for k, v in manifest.items() if k not in UNBOUND}
    bind_fields(directory / ONNX_FILE, fields)
    extra = {"parity": manifest["parity"]} if "parity" in manifest else {}
    return write_manifest(directory, list(manifest["files"]), **fields, **extra)


# -- 3: signatures ----------------------------------------------------------------------------------------------
def _hashing_config(model_signing: Any) -> Any:
    # model-signing hashes every file of the directory; the signature itself is the one left out
    return model_signing.hashing.Config().set_ignored_paths(paths=[SIGNATURE_FILE], ignore_git_paths=True)


def sign_model(directory: str | os.PathLike, private_key: str | os.PathLike, password: str | None = None) -> Path:
    """Sign every file of an exported policy directory (its manifest verified first) with an elliptic-curve
    private key (PEM; P-256, P-384 or P-521); writes and returns ``directory/model.sig``."""
    model_signing = _import_model_signing()
    directory, private_key = Path(directory), Path(private_key)
    open_model(directory)  # never sign a broken model
    if not private_key.is_file():
        raise ValueError(f"{private_key}: no such private key file")
    tmp = directory / (SIGNATURE_FILE + ".tmp")
    try:
        model_signing.signing.Config().use_elliptic_key_signer(
            private_key=private_key, password=password).set_hashing_config(
            _hashing_config(model_signing)).sign(directory, tmp)
    except (ValueError, TypeError) as e:  # not a PEM key, a wrong password, an unsupported curve
        tmp.unlink(missing_ok=True)
        raise ValueError(f"signing {directory} with {private_key} failed: {e}") from e
    os.replace(tmp, directory / SIGNATURE_FILE)
    return directory / SIGNATURE_FILE


def verify_signature(directory: str | os.PathLike, public_key: str | os.PathLike) -> None:
    """Refuse (ModelIntegrityError) a directory without ``model.sig``, or whose signature was not made by the key
    matching ``public_key`` over exactly its files as they are now."""
    directory, public_key = Path(directory), Path(public_key)
    if not public_key.is_file():
        raise ModelIntegrityError(f"the trusted public key {public_key} does not exist")
    signature = directory / SIGNATURE_FILE
    if not signature.is_file():
        raise ModelIntegrityError(f"{directory}: unsigned model (no {SIGNATURE_FILE}) refused: a trusted key "
                                  f"({public_key}) is configured; sign it with `gato-sign-model {directory} --key KEY`")
    model_signing = _import_model_signing()
    try:
        config = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public_key)
    except ValueError as e:  # not a PEM public key, or an unsupported curve
        raise ModelIntegrityError(f"the trusted public key {public_key} cannot be used: {e}") from e
    try:
        config.set_hashing_config(_hashing_config(model_signing)).verify(directory, signature)
    except Exception as e:  # model_signing raises ValueError, cryptography's InvalidSignature, protobuf/JSON errors
        why = str(e) or type(e).__name__
        raise ModelIntegrityError(f"{directory}: signature refused with the trusted key {public_key}: {why}") from e


def generate_key(private_key: str | os.PathLike) -> tuple[Path, Path]:
    """A new P-256 key pair: ``private_key`` (PEM, PKCS#8, unencrypted, mode 0600) and ``<stem>.pub`` beside it
    (PEM). The same as ``openssl ecparam -name prime256v1 -genkey -noout -out key.pem`` and
    ``openssl ec -in key.pem -pubout -out key.pub``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private_key = Path(private_key)
    public_key = private_key.with_suffix(".pub")
    if private_key.exists() or public_key.exists():
        raise ValueError(f"{private_key} or {public_key} exists already; not overwritten")
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_key.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_key, public_key


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gato-sign-model", description=__doc__.split("\n\n")[0],
                                 epilog="Keys: elliptic-curve PEM (P-256/384/521); --generate-key or openssl "
                                        "(docs/model.md, Signed models).")
    ap.add_argument("directory", nargs="?", type=Path, help="exported ONNX policy directory (model.onnx + manifest)")
    ap.add_argument("--key", type=Path, help="private key (PEM) to sign DIR with: writes DIR/model.sig")
    ap.add_argument("--password", default=None, help="the private key's password, if it is encrypted")
    ap.add_argument("--verify", type=Path, metavar="PUBLIC_KEY", help="check DIR's signature with this public key")
    ap.add_argument("--generate-key", type=Path, metavar="KEY", help="write a new key pair KEY and KEY's .pub")
    ap.add_argument("--bind", action="store_true",
                    help="first bind the manifest's fields into model.onnx (exports made before format 2), as the "
                         "manifest has them now: you vouch for them")
    args = ap.parse_args(argv)
    try:
        if args.generate_key:
            private, public = generate_key(args.generate_key)
            print(f"wrote {private} (private: keep it off the robot) and {public} (public: the robot's "
                  "trusted_public_key)")
            if args.directory is None:
                return 0
        if args.directory is None or not (args.key or args.verify or args.bind):
            ap.error("give DIR with --key, --verify or --bind (or only --generate-key KEY)")
        if args.bind:
            print(f"bound the manifest fields into {args.directory / ONNX_FILE}; rewrote {bind_directory(args.directory)}")
        if args.key:
            print(f"signed {args.directory}: {sign_model(args.directory, args.key, args.password)}")
        if args.verify:
            open_model(args.directory, args.verify)
            print(f"{args.directory}: signature verified with {args.verify}; manifest and files intact")
    except (ValueError, OSError) as e:  # ModelIntegrityError is a ValueError
        print(f"gato-sign-model: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
