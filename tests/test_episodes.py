"""The HDF5 episode format: round trip, windows, and damaged files reported, never silently wrong."""

from __future__ import annotations

import re

import numpy as np
import pytest

from gato_robot.core.specs import rgb_stacking_spec
from gato_robot.data.episodes import Episode, EpisodeError, EpisodeReader, list_episodes, read_episode, write_episode
from tests.conftest import random_action, random_observation


def make_episode(n: int = 6, seed: int = 0) -> Episode:
    spec = rgb_stacking_spec(2, image_size=32)
    rng = np.random.default_rng(seed)
    obs = [random_observation(spec, rng) for _ in range(n)]
    return Episode(
        spec=spec,
        observations={s.name: np.stack([o[s.name] for o in obs]) for s in spec.observations},
        actions={"action": np.stack([random_action(spec, rng) for _ in range(n)])},
        rewards=np.zeros(n, np.float32),
        metadata={"task": "rgb_test_triplet1", "success": False, "return": 0.0, "seed": seed},
        extras={"object_poses": rng.normal(size=(n, 3, 7))},
    )


def assert_same(a: Episode, b: Episode) -> None:
    assert a.spec == b.spec and a.metadata == b.metadata
    for k in a.observations:
        np.testing.assert_array_equal(a.observations[k], b.observations[k])
    np.testing.assert_array_equal(a.actions["action"], b.actions["action"])
    np.testing.assert_array_equal(a.extras["object_poses"], b.extras["object_poses"])


def test_round_trip_and_windows(tmp_path):
    ep = make_episode()
    path = write_episode(tmp_path / "ep0", ep)
    assert path.name == "ep0.h5" and list_episodes(tmp_path) == [path]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind
    assert_same(read_episode(path), ep)
    with EpisodeReader(path) as r:
        assert len(r) == 6 and r.metadata["task"] == "rgb_test_triplet1"
        w = r.read(2, 5)
    assert len(w) == 3
    np.testing.assert_array_equal(w.observations["camera/basket_front_left"], ep.observations["camera/basket_front_left"][2:5])
    with EpisodeReader(path) as r, pytest.raises(EpisodeError, match="outside episode"):
        r.read(4, 9)


def test_invalid_episodes_are_refused_before_writing(tmp_path):
    ep = make_episode()
    ep.actions["action"] = ep.actions["action"][:3]
    with pytest.raises(EpisodeError, match=r"actions\['action'\] has shape"):
        write_episode(tmp_path / "bad", ep)
    assert not list(tmp_path.iterdir())


def test_not_an_episode_file(tmp_path):
    p = tmp_path / "x.h5"
    p.write_bytes(b"not hdf5 at all")
    with pytest.raises(EpisodeError, match="cannot open"):
        read_episode(p)


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75, 0.99])
def test_truncated_files_are_reported(tmp_path, fraction):
    path = write_episode(tmp_path / "ep", make_episode())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(EpisodeError, match=str(path.name)):
        read_episode(path)


def test_bit_flips_are_errors_or_harmless_never_silent(tmp_path):
    ep = make_episode(n=8)
    path = write_episode(tmp_path / "ep", ep)
    clean = path.read_bytes()
    rng = np.random.default_rng(0)
    detected = 0
    for pos in rng.integers(0, len(clean), 200):
        damaged = bytearray(clean)
        damaged[pos] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(damaged))
        try:
            got = read_episode(path)
        except EpisodeError:
            detected += 1
            continue
        assert_same(got, ep)  # a flip that goes unreported must not have changed any data
    assert detected > 50  # flips in padding and free space are harmless; those in data or headers are caught


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("field", ["observations/proprio/joint_angles", "actions/action", "rewards",
                                   "extras/object_poses"])
def test_scenario_20_non_finite_values_are_refused_naming_the_field_and_nothing_is_written(tmp_path, field, bad):
    good = write_episode(tmp_path / "ep", make_episode())
    before = good.read_bytes()
    ep = make_episode()
    group, _, name = field.partition("/")
    arr = (getattr(ep, group)[name] if name else ep.rewards).astype(np.float32)
    arr[4, ...] = bad  # row 4
    if name:
        getattr(ep, group)[name] = arr
    else:
        ep.rewards = arr
    label = f"{group}[{name!r}]" if name else "rewards"
    with pytest.raises(ValueError, match=rf"{re.escape(label)} holds non-finite values .* row 4"):
        write_episode(tmp_path / "ep", ep)  # over an existing good file: left as it was
    with pytest.raises(EpisodeError, match=re.escape(label)):
        write_episode(tmp_path / "new", ep)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ep.h5"]  # no new file, no temporary left behind
    assert good.read_bytes() == before


def test_scenario_20_a_non_finite_value_edited_into_a_file_is_refused_on_read(tmp_path):
    """A file written by another tool (here: edited with h5py, its row CRC recomputed so only the NaN is wrong)."""
    import zlib

    import h5py

    path = write_episode(tmp_path / "ep", make_episode(n=8))
    with h5py.File(path, "r+") as f:
        ds = f["actions/action"]
        a = ds[...]
        a[5, 1] = np.nan
        ds[...] = a
        f["checksums/actions/action"][...] = [zlib.crc32(np.ascontiguousarray(r).tobytes()) for r in a]
    with EpisodeReader(path) as r:
        assert len(r.read(0, 5)) == 5  # rows before the NaN read fine
        with pytest.raises(EpisodeError, match=r"ep\.h5: actions\['action'\] holds non-finite values .* row 5"):
            r.read(3, 8)
        with pytest.raises(EpisodeError, match=r"ep\.h5: 'actions/action' holds non-finite values .* row 5"):
            r.verify()
