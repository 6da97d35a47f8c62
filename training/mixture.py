"""A multi-domain mixture of datasets (issue 8): ``data.domains`` -> one deterministic stream of samples.

Sample i of the mixture: its domain is drawn from ``np.random.default_rng([seed, stream, i])`` with the configured
weights, then the domain's own dataset gives its sample i, itself a pure function of ``(seed, domain stream, i)``
(domain streams are distinct from the mixture's, so the domain draw and the sample's draws are independent).
So the order depends only on the global sample index: resume and any number of workers or ranks stay exact,
and every sample carries its ``domain`` id (the index in ``data.domains``) for per-domain losses and token counts.

Control domains are ``WindowDataset``s over an ``EpisodeIndex`` (Gato's return filter per task, damaged files
capped by ``data.max_damaged``), tokenized with ``text_targets=False``: instructions are context, actions are the
targets. Text, caption and VQA domains come from ``gato_robot.domains.text`` / ``gato_robot.domains.vision``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from gato_robot.core.specs import RobotSpec
from gato_robot.domains.damage import DomainDataError
from gato_robot.training import data
from gato_robot.training.config import DomainConfig, TrainConfig

log = logging.getLogger(__name__)

CONTROL_KINDS = ("babyai", "metaworld", "rgb_stacking", "episodes")
_DOMAIN_STREAM = 1000  # domain k uses streams 1000 + 2k (training) and 1001 + 2k (held out)


class MixtureDataset(torch.utils.data.Dataset):
    def __init__(self, datasets: Sequence[Any], weights: Sequence[float], *, seed: int, stream: int) -> None:
        if len(datasets) != len(weights) or not datasets:
            raise ValueError("a mixture needs one positive weight per dataset")
        w = np.asarray(weights, np.float64)
        self.datasets, self.weights, self.seed, self.stream = list(datasets), w / w.sum(), seed, stream
        self._cum = np.cumsum(self.weights)

    def domain_of(self, i: int) -> int:
        u = np.random.default_rng([self.seed, self.stream, int(i)]).random()
        return int(np.searchsorted(self._cum, u, side="right").clip(0, len(self.datasets) - 1))

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        try:
            return self.datasets[self.domain_of(i)][i]
        except DomainDataError as e:
            raise data.DataError(str(e)) from e


def _control(d: DomainConfig, k: int, cfg: TrainConfig, context: int) -> tuple[Any, Any, RobotSpec]:
    dc = cfg.data
    build = dict(max_damaged=dc.max_damaged, successful_only=dc.successful_only, return_fraction=d.return_fraction,
                 on_bad=dc.on_bad_episode, verify=dc.verify_episodes)
    try:
        index = data.EpisodeIndex.build(d.paths, **build)
        if d.eval_paths:
            train_index, eval_index = index, data.EpisodeIndex.build(d.eval_paths, **build)
        else:
            train_index, eval_index = index.split(dc.eval_fraction)
    except data.DataError as e:
        raise data.DataError(f"domain {d.name!r}: {e}") from e
    if not train_index.episodes:
        raise data.DataError(f"domain {d.name!r}: no usable episodes in {list(d.paths)}")
    common = dict(context=context, seed=cfg.run.seed, prompt_fraction=dc.prompt_fraction,
                  prompt_end_fraction=dc.prompt_end_fraction, prompt_tokens=dc.prompt_tokens,
                  max_damaged=dc.max_damaged, domain_id=k, text_targets=False, on_bad=dc.on_bad_episode)
    train = data.WindowDataset(train_index, stream=_DOMAIN_STREAM + 2 * k, train=True, **common)
    held = (data.WindowDataset(eval_index, stream=_DOMAIN_STREAM + 2 * k + 1, train=False, **common)
            if len(eval_index) else None)
    log.info("domain %s (%s): %d training episodes, %d held out, %d damaged", d.name, d.kind, len(train_index),
             len(eval_index), len(index.damaged))
    return train, held, data.first_spec(train_index)


def _other(d: DomainConfig, k: int, cfg: TrainConfig, context: int) -> tuple[Any, Any]:
    from gato_robot.domains import text, vision

    def make(split: str, stream: int, paths: Sequence[str], train: bool) -> Any:
        kw: dict[str, Any] = dict(context=context, seed=cfg.run.seed, stream=stream, domain_id=k,
                                  max_damaged=cfg.data.max_damaged, name=d.name, split=split,
                                  eval_fraction=cfg.data.eval_fraction)
        if d.kind == "text":
            return text.TextDataset(paths, field=d.text_field, **kw)
        # held-out samples use Gato's evaluation patch positions (rounded means), training ones random positions
        kw.update(images=d.images, image_size=d.image_size, text_model=None, train=train)
        if d.kind == "caption":
            return vision.CaptionDataset(paths, text_field=d.text_field, **kw)
        return vision.VQADataset(paths, image_pattern=d.image_pattern, **kw)

    train_stream, held_stream = _DOMAIN_STREAM + 2 * k, _DOMAIN_STREAM + 2 * k + 1
    try:
        if d.eval_paths:
            return make("all", train_stream, d.paths, True), make("all", held_stream, d.eval_paths, False)
        return make("train", train_stream, d.paths, True), make("eval", held_stream, d.paths, False)
    except DomainDataError as e:
        raise data.DataError(str(e)) from e


def build(cfg: TrainConfig, context: int) -> tuple[MixtureDataset, list[Any | None], list[str], RobotSpec | None,
                                                   dict[str, RobotSpec]]:
    """(training mixture, held-out dataset per domain (None: none), domain names, the spec checkpoints record (the
    first control domain's), every control domain's spec)."""
    trains, evals, specs = [], [], {}
    for k, d in enumerate(cfg.data.domains):
        if d.kind in CONTROL_KINDS:
            train, held, spec = _control(d, k, cfg, context)
            specs[d.name] = spec
        else:
            train, held = _other(d, k, cfg, context)
        trains.append(train)
        evals.append(held)
    mixture = MixtureDataset(trains, [d.weight for d in cfg.data.domains], seed=cfg.run.seed,
                             stream=data.TRAIN_STREAM)
    first = next(iter(specs.values()), None)
    return mixture, evals, [d.name for d in cfg.data.domains], first, specs


def text_only_spec() -> RobotSpec:
    """What a checkpoint records when a mixture has no control domain (the model itself is spec-free)."""
    from gato_robot.core.specs import Kind, TensorSpec

    return RobotSpec("text_only", observations=(TensorSpec("text", Kind.TEXT, max_tokens=64),),
                     actions=(TensorSpec("action", Kind.DISCRETE, (1,), num_values=1),))
