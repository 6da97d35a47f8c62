"""The RGB objects: mesh files, object sets and the named triplets of DeepMind's rgb_stacking.

The meshes (Apache-2.0, convex, metres, 12-36 triangles) are read in place from the
``dm-robotics-manipulation`` wheel (rgb_stacking.md): ``.../props/rgb_objects/assets/rgb_v1.3/meshes/``
with sub-folders ``test_triplets`` (13), ``train`` (103) and ``heldout`` (36). The package's Python is never
imported (its dependencies, MuJoCo and dm_control, are not installed); only ``importlib.metadata`` is used to
find the files. File names encode the parameters: ``<id>_sds4_shr0_..._scx50_scy50_scz50.stl``.

Object sets follow ``dm_robotics/manipulation/props/rgb_objects/rgb_object.py`` (v1.3):
- test triplets: ``rgb_test_triplet1..5`` = (r3, s0, b2), (r5, g2, b3), (r6, g3, b5), (s0, g5, b6), (r2, g6, s0)
  as (red, green, blue);
- training set: the 103 two-axis objects (``train/``);
- held-out set: every single-axis object (ids of two characters), i.e. the 36 in ``heldout/`` plus the 13 test
  objects, as the original's ``RGB_OBJECTS_HELDOUT_SET`` defines it;
- random triplets draw red, green and blue independently (with replacement), as the original's
  ``random_triplet``; ``rgb_test_random`` picks one of the five test triplets.
"""

from __future__ import annotations

import functools
import importlib.metadata
from pathlib import Path

import numpy as np

DISTRIBUTION = "dm-robotics-manipulation"
MESH_DIR = "dm_robotics/manipulation/props/rgb_objects/assets/rgb_v1.3/meshes/"
INSTALL_HINT = "pip install --no-deps -r requirements/assets.txt"

TEST_TRIPLETS: dict[str, tuple[str, str, str]] = {
    "rgb_test_triplet1": ("r3", "s0", "b2"),
    "rgb_test_triplet2": ("r5", "g2", "b3"),
    "rgb_test_triplet3": ("r6", "g3", "b5"),
    "rgb_test_triplet4": ("s0", "g5", "b6"),
    "rgb_test_triplet5": ("r2", "g6", "s0"),
}
RANDOM_TRIPLETS = ("rgb_train_random", "rgb_heldout_random", "rgb_test_random")
TRIPLET_NAMES = (*TEST_TRIPLETS, *RANDOM_TRIPLETS)
COLORS = ("red", "green", "blue")
RGBA = {"red": (1.0, 0.0, 0.0, 1.0), "green": (0.0, 1.0, 0.0, 1.0), "blue": (0.0, 0.0, 1.0, 1.0)}
OBJECT_MASS_KG = 0.2  # rgb_stacking.md: 0.2 kg each


@functools.cache
def mesh_files() -> dict[str, Path]:
    """Object id (``r3``, ``s0``, ``y67``...) -> absolute STL path inside the installed wheel."""
    try:
        files = importlib.metadata.files(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        files = None
    if not files:
        raise FileNotFoundError(
            f"the RGB-object meshes come from the {DISTRIBUTION!r} wheel, which is not installed; "
            f"run `{INSTALL_HINT}` (data only, its Python is never imported)"
        )
    found: dict[str, Path] = {}
    for f in files:
        s = str(f)
        if s.startswith(MESH_DIR) and s.endswith(".stl"):
            path = Path(f.locate())
            found[path.name.split("_")[0]] = path
    if not found:
        raise FileNotFoundError(f"{DISTRIBUTION} is installed but has no meshes under {MESH_DIR}; run `{INSTALL_HINT}`")
    return found


def _ids_in(folder: str) -> tuple[str, ...]:
    return tuple(sorted(i for i, p in mesh_files().items() if p.parent.name == folder))


def object_set(name: str) -> tuple[str, ...]:
    """``train`` (103 ids), ``heldout`` (49: all single-axis ids) or ``test`` (13)."""
    if name == "train":
        return _ids_in("train")
    if name == "heldout":
        return tuple(sorted(i for i in mesh_files() if len(i) == 2))
    if name == "test":
        return _ids_in("test_triplets")
    raise ValueError(f"unknown object set {name!r}; choose train, heldout or test")


def check_triplet_name(name: str) -> str:
    if name not in TRIPLET_NAMES:
        raise ValueError(f"unknown triplet {name!r}; valid names: {', '.join(TRIPLET_NAMES)}")
    return name


def check_object_ids(ids: tuple[str, str, str] | list[str]) -> tuple[str, str, str]:
    ids = tuple(str(i) for i in ids)
    files = mesh_files()
    unknown = [i for i in ids if i not in files]
    if len(ids) != 3 or unknown:
        raise ValueError(f"object_ids must be three RGB-object ids (red, green, blue) such as ('s0', 's0', 's0'); "
                         f"got {ids}, unknown {unknown}")
    return ids  # type: ignore[return-value]


def resolve_triplet(name: str, rng: np.random.Generator) -> tuple[str, str, str]:
    """(red, green, blue) object ids for a triplet name; random names draw from ``rng``."""
    check_triplet_name(name)
    if name in TEST_TRIPLETS:
        return TEST_TRIPLETS[name]
    if name == "rgb_test_random":
        return TEST_TRIPLETS[list(TEST_TRIPLETS)[int(rng.integers(len(TEST_TRIPLETS)))]]
    ids = object_set("train" if name == "rgb_train_random" else "heldout")
    return tuple(str(ids[int(rng.integers(len(ids)))]) for _ in COLORS)  # type: ignore[return-value]


def expand_triplets(spec: str) -> list[str]:
    """Command-line triplet selection: ``test`` (the five test triplets), ``all``, or comma-separated names."""
    if spec == "test":
        return list(TEST_TRIPLETS)
    if spec == "all":
        return list(TRIPLET_NAMES)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise ValueError(f"no triplet names in {spec!r}; use test, all, or names from {', '.join(TRIPLET_NAMES)}")
    return [check_triplet_name(n) for n in names]


@functools.cache
def mesh_vertices(object_id: str) -> np.ndarray:
    """Unique vertices (N, 3) of a binary STL mesh, metres, in the file's frame."""
    files = mesh_files()
    if object_id not in files:
        raise ValueError(f"unknown RGB object {object_id!r}; known ids include {', '.join(sorted(files)[:12])}, ...")
    data = files[object_id].read_bytes()
    n = int(np.frombuffer(data[80:84], np.uint32)[0])
    tri = np.frombuffer(data[84 : 84 + 50 * n], dtype=np.dtype([("n", "<3f4"), ("v", "<9f4"), ("a", "<u2")]))
    v = tri["v"].reshape(-1, 3).astype(np.float64)
    return np.unique(np.round(v, 6), axis=0)


def mesh_centroid(object_id: str) -> np.ndarray:
    """Volume centroid of the (convex) mesh: the body frame and centre of mass used in the simulation."""
    v = mesh_vertices(object_id)
    c0 = v.mean(axis=0)
    files = mesh_files()
    data = files[object_id].read_bytes()
    n = int(np.frombuffer(data[80:84], np.uint32)[0])
    tri = np.frombuffer(data[84 : 84 + 50 * n], dtype=np.dtype([("n", "<3f4"), ("v", "<9f4"), ("a", "<u2")]))
    t = tri["v"].reshape(-1, 3, 3).astype(np.float64) - c0  # (T, 3 corners, xyz)
    vol = np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])) / 6.0  # signed tetra volumes to c0
    if abs(vol.sum()) < 1e-12:
        return c0
    centres = t.sum(axis=1) / 4.0
    return c0 + (vol[:, None] * centres).sum(axis=0) / vol.sum()
