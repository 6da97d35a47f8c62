"""Training sequences from episode files: an index, a deterministic window sampler, a DataLoader.

- ``EpisodeIndex``: every episode file opened once at start (header: spec, metadata, length; with
  ``data.verify_episodes`` also every non-image row, CRC-checked, and float data checked for NaN/Inf). A bad file
  (damaged, unreadable, non-finite: ``EpisodeError``) is named and skipped, up to ``data.max_damaged``, and counted
  in the report; beyond that the run stops, since a data set that broken needs a person. With
  ``data.on_bad_episode=error`` the first bad file stops the run, named (``DataError``, exit 3).
- ``WindowDataset[i]``: the i-th training sequence is a pure function of ``(seed, stream, i)``: the episode
  (weighted by its length, times its data path's ``@weight``: ``--data DIR@3``), the start timestep, whether it
  gets a prompt and which, and the random patch positions all come from ``np.random.default_rng([seed, stream,
  i])``. So the data order depends only on the global sample index: resuming at step s continues exactly, with
  any number of DataLoader workers or ranks.
- A sequence is whole timesteps from one episode, built by the shared sequence builder
  (``gato_robot.core.sequence.build_episode``), as many as fill the context (``windows``); the start is drawn
  so the window fills the context whenever the episode is long enough.
- Prompt conditioning (Gato Sec. 3.3): ``data.prompt_fraction`` of sequences (25%) are prefixed by timesteps of
  another episode of the same task (metadata ``task``): with probability ``prompt_end_fraction`` its last
  timesteps (goal conditioning), else a uniformly placed window; at most ``prompt_tokens`` tokens. Prompt tokens
  are never loss targets (project choice: the prompt conditions, the episode is what is learned).
- Image patches travel as uint8 pixels (4x less worker-to-trainer and host-to-device traffic) and become the
  tokenizer's floats on the device (``patches_to_float``, bit-identical to the tokenizer, tested).

Shapes: B sequences, T context, P = 768 values per 16x16x3 patch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gato_robot.core import vocab
from gato_robot.core.gripper import episode_grasp_flags
from gato_robot.core.sequence import TokenBlock, build_episode, collate, last_window, windows
from gato_robot.core.specs import GRIPPER_KEY, PREVIOUS_ACTION_KEY, Kind, RobotSpec
from gato_robot.core.tokenizer import Tokenizer
from gato_robot.data import lerobot
from gato_robot.data.episodes import EpisodeError, EpisodeReader, list_episodes

GRIPPER, PREVIOUS_ACTION = GRIPPER_KEY, PREVIOUS_ACTION_KEY

log = logging.getLogger(__name__)

TRAIN_STREAM, EVAL_STREAM = 0, 1  # independent random streams for training and held-out sequences
_MAX_RETRIES = 8  # a window that hits damaged data is redrawn (deterministically) this many times
# Episode files kept open per worker (reopening one was 13% of a worker's time at 64). A mixture of more files than
# this reopens at random: 1,293 files with 1,024 open made training 3x slower (0.7 against 2.6 steps/s). Bounded by
# a quarter of the process's open-file limit (a worker must not run out of descriptors).
_OPEN_FILES = 8192


def _open_files_cap() -> int:
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, ValueError, OSError):  # no resource module (Windows)
        return 512
    return _OPEN_FILES if soft == resource.RLIM_INFINITY else max(64, min(_OPEN_FILES, soft // 4))


class DataError(RuntimeError):
    """The data cannot feed this run (no episodes, or more damaged files than allowed). Says what to do."""


@dataclasses.dataclass(frozen=True)
class EpisodeInfo:
    path: str
    length: int
    task: str
    spec: str  # RobotSpec JSON (a key into the per-spec tokenizers)
    weight: float = 1.0  # sampling weight per timestep, from the data path's ``@weight`` (``split_weight``)


ON_BAD = ("skip", "error")  # data.on_bad_episode


@dataclasses.dataclass
class EpisodeIndex:
    episodes: list[EpisodeInfo]
    damaged: list[tuple[str, str]]  # (path, why): bad files skipped (damaged, unreadable or non-finite)
    found: int = 0  # episode files (*.h5) found under the roots, usable or not

    @classmethod
    def build(cls, roots: Sequence[str], *, max_damaged: int, successful_only: bool = False,
              return_fraction: float = 0.0, drop_observations: Sequence[str] = (), on_bad: str = "skip",
              verify: bool = False) -> EpisodeIndex:
        """``return_fraction`` > 0 applies Gato's filter per task (``gato_robot.domains.control``): keep episodes
        whose metadata ``return`` is at least that fraction of the task's expert return. ``drop_observations``:
        observation keys removed from each episode's spec, so the model never sees them (the tokenizer ignores
        keys its spec lacks); an exported model's spec then omits them too. ``verify``: read every non-image
        row of each file now (``EpisodeReader.verify``), so damaged or non-finite files are found by name here.
        ``on_bad``: "skip" (name, skip and count, up to ``max_damaged``) or "error" (DataError at the first)."""
        if on_bad not in ON_BAD:
            raise ValueError(f"data.on_bad_episode must be one of {list(ON_BAD)}, got {on_bad!r}")
        paths = [(p, w) for r in roots for root, w in [split_weight(r)] for p in _expand(root)]
        episodes, damaged, metas = [], [], []
        for p, weight in paths:
            try:
                with EpisodeReader(p) as r:
                    meta, length, spec = r.metadata, len(r), without_observations(r.spec, drop_observations).to_json()
                    if verify:
                        r.verify()
            except EpisodeError as e:
                if on_bad == "error":
                    raise DataError(f"bad episode file {p}: {_why(e, p)} (data.on_bad_episode=error: repair or "
                                    "remove it, or set data.on_bad_episode=skip to skip bad files)") from e
                log.warning("skipping bad episode file %s: %s", p, _why(e, p))
                damaged.append((str(p), _why(e, p)))
                if len(damaged) > max_damaged:
                    raise DataError(
                        f"{len(damaged)} bad episode files (more than data.max_damaged={max_damaged}); first: "
                        f"{damaged[0][0]}: {damaged[0][1]}. Repair or remove them, or raise data.max_damaged"
                    ) from e
                continue
            if length == 0 or (successful_only and not meta.get("success", False)):
                continue
            episodes.append(EpisodeInfo(str(p), length, str(meta.get("task", "default")), spec, weight))
            metas.append(meta)
        if return_fraction > 0:
            from gato_robot.domains.control import passes_return_filter

            keep = [True] * len(episodes)
            for task in _group(episodes):
                rows = [i for i, e in enumerate(episodes) if e.task == task]
                for i, ok in zip(rows, passes_return_filter([metas[i] for i in rows], return_fraction)):
                    keep[i] = ok
            dropped = len(episodes) - sum(keep)
            if dropped:
                log.info("return filter (>= %.0f%% of the expert's): %d of %d episodes dropped",
                         100 * return_fraction, dropped, len(episodes))
            episodes = [e for e, k in zip(episodes, keep) if k]
        return cls(episodes, damaged, len(paths))

    def describe_empty(self, roots: Sequence[str]) -> str:
        """Why this index has no episodes, in one line (for the error that stops a run)."""
        where = ", ".join(str(r) for r in roots) or "(none given: --data DIR)"
        if not self.found:
            return (f"no episode files (*.h5) under {where}: point --data at a folder of episodes written by "
                    "gato_robot.data.episodes (e.g. gato-log-convert or python -m gato_robot.sim.collect)")
        if len(self.damaged) == self.found:
            return (f"no usable episodes under {where}: all {self.found} episode files are bad (first: "
                    f"{self.damaged[0][0]}: {self.damaged[0][1]})")
        return (f"no usable episodes under {where}: {self.found} episode files, {len(self.damaged)} bad, the rest "
                "empty or filtered out (data.successful_only, a domain's return_fraction)")

    def split(self, eval_fraction: float) -> tuple[EpisodeIndex, EpisodeIndex]:
        """(train, held-out): the last ``round(n * eval_fraction)`` (at least 1) episodes of every task with at
        least 3 episodes are held out; smaller tasks stay whole (their episodes prompt each other)."""
        if eval_fraction <= 0:
            return self, EpisodeIndex([], [])
        train, held = [], []
        for task_eps in _group(self.episodes).values():
            n_held = max(1, round(len(task_eps) * eval_fraction)) if len(task_eps) >= 3 else 0
            n_held = min(n_held, len(task_eps) - 2)
            train += task_eps[: len(task_eps) - n_held]
            held += task_eps[len(task_eps) - n_held:]
        return EpisodeIndex(train, self.damaged, self.found), EpisodeIndex(held, [])

    def __len__(self) -> int:
        return len(self.episodes)


def _why(e: EpisodeError, path: Path | str) -> str:
    """An EpisodeError's message without its leading path (the caller names the file once)."""
    text = str(e)
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def split_weight(root: str) -> tuple[str, float]:
    """``"DIR@3"`` -> ``("DIR", 3.0)``: the episodes under DIR are drawn 3x as often per timestep as those of a
    path without a weight (1). A path that exists as written is taken literally, ``@`` and all."""
    path, at, weight = root.rpartition("@")
    if not at or Path(root).exists():
        return root, 1.0
    try:
        w = float(weight)
    except ValueError:
        return root, 1.0  # not a weight: _expand reports the path as missing
    if not (math.isfinite(w) and w > 0):
        raise DataError(f"data path {root}: the weight after @ must be a positive number, got {weight!r}")
    return path, w


def _expand(root: str) -> list[Path]:
    if root.startswith(lerobot.LEROBOT_SOURCE):  # a LeRobotDataset v3 folder, imported once into a cache
        try:
            return lerobot.imported_episodes(root[len(lerobot.LEROBOT_SOURCE):])
        except lerobot.LeRobotError as e:
            raise DataError(f"data path {root}: {e}") from e
    p = Path(root)
    if not p.exists():
        raise DataError(f"data path {root} does not exist")
    return list_episodes(p)


def _group(episodes: Sequence[EpisodeInfo]) -> dict[str, list[EpisodeInfo]]:
    out: dict[str, list[EpisodeInfo]] = {}
    for e in episodes:
        out.setdefault(e.task, []).append(e)
    return out


def _min_max_timestep_tokens(spec: RobotSpec) -> tuple[int, int]:
    text = sum(s.num_tokens for s in spec.observations if s.kind is Kind.TEXT)
    return max(1, spec.max_timestep_tokens - text), spec.max_timestep_tokens


@dataclasses.dataclass(frozen=True)
class AuxTargets:
    """Auxiliary regression targets from an episode's extras (privileged data as a training signal, never an
    input): per timestep ``(extras[name][t][..., :take] - center) / scale``, flattened; asked of the model at the
    timestep's separator, after it has seen that timestep's observation (``Gato.forward(aux_targets=...)``)."""

    extras: str
    take: int = 3
    center: tuple[float, ...] = ()
    scale: float = 0.1

    @classmethod
    def from_config(cls, section: Any) -> AuxTargets | None:
        if not section.aux_extras:
            return None
        return cls(section.aux_extras, section.aux_take, tuple(section.aux_center), section.aux_scale)

    def values(self, extras: dict[str, np.ndarray], path: str) -> np.ndarray:
        """(T, K) float32 targets of the timesteps read."""
        if self.extras not in extras:
            raise DataError(f"{path}: no extras/{self.extras} for data.aux_extras (episodes from sim.collect have "
                            f"extras/object_poses); have {sorted(extras)}")
        arr = np.asarray(extras[self.extras], np.float32)[..., : self.take]
        if self.center:
            arr = arr - np.asarray(self.center, np.float32)
        return (arr / np.float32(self.scale)).reshape(arr.shape[0], -1)


class WindowDataset(torch.utils.data.Dataset):
    """Map-style view of an endless, deterministic stream of training sequences (see module docstring)."""

    def __init__(self, index: EpisodeIndex, *, context: int, seed: int, stream: int = TRAIN_STREAM,
                 prompt_fraction: float = 0.25, prompt_end_fraction: float = 0.5, prompt_tokens: int | None = None,
                 domain_id: int = 0, train: bool = True, max_damaged: int = 10, text_targets: bool = True,
                 aux: AuxTargets | None = None, max_timesteps: int | None = None, image_shift: int = 0,
                 grasp_flag: str = "stored", on_bad: str = "skip") -> None:
        if not index.episodes:
            raise DataError("no usable episodes (empty folders, all damaged, or all filtered out)")
        self.index, self.context, self.seed, self.stream = index, context, seed, stream
        self.prompt_fraction, self.prompt_end_fraction = prompt_fraction, prompt_end_fraction
        self.prompt_tokens = prompt_tokens if prompt_tokens is not None else context // 4
        if self.prompt_tokens >= context:
            raise ValueError(f"data.prompt_tokens {self.prompt_tokens} must be smaller than the context {context}")
        self.domain_id, self.train, self.max_damaged = domain_id, train, max_damaged
        self.text_targets = text_targets  # False for control domains: instructions are context, actions the targets
        self.aux = aux
        if max_timesteps is not None and max_timesteps <= 0:
            raise ValueError(f"max_timesteps must be positive, got {max_timesteps}")
        self.max_timesteps = max_timesteps  # at most this many timesteps per window (1: a Markov policy)
        if image_shift < 0:
            raise ValueError(f"image_shift must be >= 0 pixels, got {image_shift}")
        self.image_shift = image_shift if train else 0  # held-out sequences are never augmented
        if grasp_flag not in ("stored", "fingers"):
            raise ValueError(f"grasp_flag must be stored or fingers, got {grasp_flag!r}")
        self.grasp_flag = grasp_flag
        if on_bad not in ON_BAD:
            raise ValueError(f"on_bad must be one of {list(ON_BAD)}, got {on_bad!r}")
        self.on_bad = on_bad
        self._grasp_flags: dict[str, np.ndarray | None] = {}  # path -> the episode's re-derived flags
        lengths = np.array([e.length * e.weight for e in index.episodes], np.float64)
        self._cum = np.cumsum(lengths / lengths.sum())
        self._same_task = {t: [i for i, e in enumerate(index.episodes) if e.task == t] for t in _group(index.episodes)}
        self._readers: OrderedDict[str, EpisodeReader] = OrderedDict()
        self._open_cap = _open_files_cap()
        self._tokenizers: dict[str, Tokenizer] = {}
        self._bad: set[str] = set()

    def draw_share(self, which: Sequence[bool]) -> float:
        """The probability that a sequence is cut from one of the episodes marked in ``which`` (index order)."""
        mass = np.diff(self._cum, prepend=0.0)
        return float(mass[np.asarray(which, bool)].sum())

    def __getstate__(self) -> dict[str, Any]:  # open files stay in their process (h5py handles do not fork)
        state = self.__dict__.copy()
        state["_readers"] = OrderedDict()
        return state

    # -- one sequence ----------------------------------------------------------------------------------------
    def _rng(self, i: int) -> np.random.Generator:
        """Sample ``i``'s generator: everything random about sample ``i`` comes from it, in a fixed order."""
        return np.random.default_rng([self.seed, self.stream, int(i)])

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        rng = self._rng(i)
        for _ in range(_MAX_RETRIES):
            try:
                block, aux = self._sequence(rng)
                break
            except EpisodeError as e:
                self._report(e)
        else:
            raise DataError(f"sample {i}: {_MAX_RETRIES} windows in a row hit damaged data; see the warnings above")
        b = collate([block], self.context, rng if self.train else None)
        sample = {
            "tokens": b.tokens[0], "pixels": _pixels(b.patches[0], b.is_image[0]), "patch_row": b.patch_row[0],
            "patch_col": b.patch_col[0], "local_pos": b.local_pos[0], "is_image": b.is_image[0],
            "loss_mask": b.loss_mask[0], "valid": b.valid[0], "domain": np.int64(self.domain_id),
        }
        if aux is not None:  # targets at the window's separators (a prompt's rows are NaN: not asked)
            mask = np.zeros(self.context, bool)
            mask[: len(block)] = (block.kinds == vocab.TokenKind.SEPARATOR) & ~np.isnan(aux[:, 0])
            targets = np.zeros((self.context, aux.shape[1]), np.float32)
            targets[mask] = aux[mask[: len(block)]]
            sample["aux"], sample["aux_mask"] = targets, mask
        return sample

    def episode_of(self, i: int) -> int:
        """The index (in ``self.index.episodes``) of the episode sample ``i`` draws first (its sequence is cut from
        it unless that episode turns out damaged, when ``__getitem__`` draws again)."""
        return self._draw_episode(self._rng(i))  # the first draw of __getitem__'s generator

    def _draw_episode(self, rng: np.random.Generator) -> int:
        return int(np.searchsorted(self._cum, rng.random(), side="right").clip(0, len(self.index) - 1))

    def _sequence(self, rng: np.random.Generator) -> tuple[TokenBlock, np.ndarray | None]:
        e = self._draw_episode(rng)
        prompt = TokenBlock.empty()
        if rng.random() < self.prompt_fraction:
            others = [j for j in self._same_task[self.index.episodes[e].task] if j != e]
            from_end = rng.random() < self.prompt_end_fraction
            if others:
                prompt = self._prompt(others[int(rng.integers(len(others)))], from_end, rng)
        window, aux = self._window(e, self.context - len(prompt), rng)
        if aux is not None:
            aux = np.concatenate([np.full((len(prompt), aux.shape[1]), np.nan, np.float32), aux])
        return TokenBlock.concatenate([prompt, window]), aux

    def _window(self, e: int, budget: int, rng: np.random.Generator, *,
                at_end: bool = False) -> tuple[TokenBlock, np.ndarray | None]:
        """A window of episode e and, with auxiliary targets, their rows per token (N, K)."""
        info = self.index.episodes[e]
        tok = self._tokenizer(info.spec)
        least, most = _min_max_timestep_tokens(tok.spec)
        surely_fit = max(1, budget // most)  # timesteps that fit whatever their text
        if self.max_timesteps is not None:
            surely_fit = min(surely_fit, self.max_timesteps)
        first = max(0, info.length - surely_fit) if at_end else int(rng.integers(max(1, info.length - surely_fit + 1)))
        stop = min(info.length, first + math.ceil(budget / least))
        if self.max_timesteps is not None:
            stop = min(stop, first + self.max_timesteps)
        try:
            ep = self._reader(info.path).read(first, stop)
        except EpisodeError:
            self._bad.add(info.path)
            raise
        obs, act = zip(*((ep.observation(t), ep.action(t)) for t in range(len(ep))))
        flags = self._episode_grasp_flags(info.path) if self.grasp_flag == "fingers" else None
        if flags is not None:
            obs = tuple({**o, GRIPPER: np.array([*o[GRIPPER][:2], float(flags[first + t])], o[GRIPPER].dtype)}
                        for t, o in enumerate(obs))
        if self.image_shift:
            obs = shift_images(obs, tok.spec, self.image_shift, rng)
        block = build_episode(tok, obs, act, first_timestep=first, text_targets=self.text_targets)
        window = last_window(block, budget) if at_end else windows(block, budget)[0]
        if self.aux is None:
            return window, None
        return window, self.aux.values(ep.extras, info.path)[window.timestep - first]

    def _prompt(self, e: int, from_end: bool, rng: np.random.Generator) -> TokenBlock:
        block, _ = self._window(e, self.prompt_tokens, rng, at_end=from_end)
        block.loss_mask = np.zeros_like(block.loss_mask)  # the prompt conditions; it is not a target
        return block

    def _episode_grasp_flags(self, path: str) -> np.ndarray | None:
        """``data.grasp_flag: fingers``: the episode's flags from core.gripper (a whole episode's history decides
        each one; computed once per file); None for episodes without a gripper and a previous action."""
        if path not in self._grasp_flags:
            reader = self._reader(path)
            names = {s.name for s in reader.spec.observations}
            if GRIPPER in names and PREVIOUS_ACTION in names:
                previous = reader.read_observation(PREVIOUS_ACTION)[:, -1]  # the gripper command: last in the action
                self._grasp_flags[path] = episode_grasp_flags(reader.read_observation(GRIPPER), previous)
            else:
                self._grasp_flags[path] = None
        return self._grasp_flags[path]

    # -- resources ------------------------------------------------------------------------------------------
    def _tokenizer(self, spec_json: str) -> Tokenizer:
        if spec_json not in self._tokenizers:
            self._tokenizers[spec_json] = Tokenizer(RobotSpec.from_json(spec_json))
        return self._tokenizers[spec_json]

    def _reader(self, path: str) -> EpisodeReader:
        if path in self._readers:
            self._readers.move_to_end(path)
            return self._readers[path]
        if len(self._readers) >= self._open_cap:
            self._readers.popitem(last=False)[1].close()
        self._readers[path] = r = EpisodeReader(path)
        return r

    def _report(self, e: EpisodeError) -> None:
        if self.on_bad == "error":
            raise DataError(f"bad episode data: {e} (data.on_bad_episode=error: repair or remove the file, or set "
                            "data.on_bad_episode=skip to skip bad files)")
        log.warning("damaged episode data, window redrawn: %s", e)
        if len(self._bad) > self.max_damaged:
            raise DataError(f"more than data.max_damaged={self.max_damaged} damaged episode files; last: {e}")


def shift_image(image: np.ndarray, dy: int, dx: int, pad: int) -> np.ndarray:
    """(H, W, C) image moved by (dy, dx) pixels (|dy|, |dx| <= pad), the uncovered border filled by repeating the
    edge: the random-shift augmentation of visual RL and behaviour cloning (DrQ, Kostrikov et al. 2020; Diffusion
    Policy's random crops), which keeps a policy from keying on exact pixel positions of a few hundred layouts."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    return padded[pad - dy : pad - dy + h, pad - dx : pad - dx + w]


def shift_images(observations: Sequence[dict[str, np.ndarray]], spec: RobotSpec, pad: int,
                 rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
    """Every camera of a window moved by its own random shift in [-pad, pad]^2, the same at every timestep (the
    camera moved, not the scene). Draws from ``rng`` in spec order, so a sample stays a function of its index."""
    shifts = {s.name: rng.integers(-pad, pad + 1, size=2) for s in spec.observations if s.kind is Kind.IMAGE}
    out = []
    for o in observations:
        o = dict(o)
        for name, (dy, dx) in shifts.items():
            if name in o:
                o[name] = shift_image(np.asarray(o[name]), int(dy), int(dx), pad)
        out.append(o)
    return out


def _pixels(patches: np.ndarray, is_image: np.ndarray) -> np.ndarray:
    """(T, 768) float patches of the tokenizer back to their uint8 pixels (exact: see ``patches_to_float``)."""
    out = np.zeros(patches.shape, np.uint8)
    # pixel = (p * 4 + 1) * 127.5, within 1e-4 of an integer; + 0.5 and truncation round it (one pass, no rint)
    out[is_image] = (patches[is_image] * np.float32(vocab.PATCH_SCALE * 127.5) + np.float32(128.0)).astype(np.uint8)
    return out


def patches_to_float(pixels: torch.Tensor, is_image: torch.Tensor) -> torch.Tensor:
    """(B, T, 768) uint8 -> float32 exactly as the tokenizer computes it (``gato_robot.core.tokenizer.patchify``):
    pixels * (2 / 255) - 1, divided by sqrt(16) = 4; zeros at non-image positions, like ``collate``."""
    x = pixels.to(torch.float32) * (2.0 / 255.0) - 1.0
    x = x / vocab.PATCH_SCALE
    return torch.where(is_image.unsqueeze(-1), x, 0.0)


# ----------------------------------------------------------------------------------------------------------
# Which sample indices form which batch
# ----------------------------------------------------------------------------------------------------------
class StepBatchSampler(torch.utils.data.Sampler):
    """Yields this rank's micro-batches of global sample indices, step after step, from ``start_step``.

    Step s covers samples [s * B, (s + 1) * B), B the global batch; micro-batch m of rank r takes
    s * B + m * W * b + r * b + [0, b) (W ranks, b micro-batch). Any (W, b) split of B sees the same samples
    in a step, so 1 process and N processes train on the same global batch.
    """

    def __init__(self, *, start_step: int, end_step: int, global_batch: int, micro_batch: int, rank: int,
                 world_size: int) -> None:
        super().__init__()
        self.start, self.end, self.global_batch = start_step, end_step, global_batch
        self.micro, self.rank, self.world = micro_batch, rank, world_size
        self.accum = global_batch // (micro_batch * world_size)
        assert self.accum * micro_batch * world_size == global_batch, "batch split checked by TrainConfig"

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.end):
            for m in range(self.accum):
                base = step * self.global_batch + m * self.world * self.micro + self.rank * self.micro
                yield list(range(base, base + self.micro))

    def __len__(self) -> int:
        return (self.end - self.start) * self.accum


def collate_samples(samples: Sequence[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Stack per-sequence arrays into (B, ...) tensors."""
    return {k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in samples[0]}


def make_loader(dataset: WindowDataset, sampler: StepBatchSampler, *, workers: int, prefetch: int,
                pin_memory: bool) -> torch.utils.data.DataLoader:
    # Its own generator: a DataLoader iterator otherwise draws its workers' base seed from the global torch RNG,
    # which would shift the dropout stream of a resumed run (samples use no torch randomness at all).
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate_samples, num_workers=workers, pin_memory=pin_memory,
        prefetch_factor=prefetch if workers > 0 else None, persistent_workers=False,
        generator=torch.Generator().manual_seed(dataset.seed), worker_init_fn=_fresh_files,
    )


def _fresh_files(worker_id: int) -> None:
    """A forked worker opens its own episode files: HDF5 handles inherited from the parent are not fork-safe."""
    ds = torch.utils.data.get_worker_info().dataset
    for d in (ds, *getattr(ds, "datasets", ())):  # a mixture's control domains too
        if hasattr(d, "_readers"):
            d._readers = OrderedDict()


def without_observations(spec: RobotSpec, drop: Sequence[str]) -> RobotSpec:
    """``spec`` without the named observation keys (``data.drop_observations``)."""
    try:
        return spec.without(drop)
    except ValueError as e:
        raise DataError(f"data.drop_observations: {e}") from e


def first_spec(index: EpisodeIndex) -> RobotSpec:
    if not index.episodes:
        raise DataError("no usable episodes (empty folders, all bad, or all filtered out)")
    return RobotSpec.from_json(index.episodes[0].spec)
