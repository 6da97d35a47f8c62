"""The training loop: build everything from a TrainConfig, then step, log, evaluate and checkpoint.

One optimizer step = the global batch (``run.batch_size`` sequences) split into micro-batches over ranks and
gradient-accumulation steps. The loss is the paper's masked loss (text and action targets only) averaged over
all counted targets of the global batch: each micro-batch's mean is re-weighted by its share of the step's
targets, so N processes and 1 process compute the same loss and gradient on the same global batch.

Before the optimizer runs, the step's loss and global gradient norm must be finite; otherwise the step is
dropped (gradients cleared, weights and optimizer untouched) and the run stops with ``NonFiniteError``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import random
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gato_robot.core.tokenizer import Tokenizer
from gato_robot.model.checkpoint import read_checkpoint_config, save_checkpoint, weights_dir
from gato_robot.model.config import GatoConfig
from gato_robot.model.config import preset as model_preset
from gato_robot.model.embedding import GatoInputs
from gato_robot.model.gato import Gato
from gato_robot.training import checkpointing, data, distributed, hooks
from gato_robot.training.config import TrainConfig
from gato_robot.training.distributed import DistInfo
from gato_robot.training.optim import build_optimizer, freeze, lr_at, set_lr

log = logging.getLogger(__name__)

CHECKPOINTS, METRICS, CONFIG_FILE = "checkpoints", "metrics.jsonl", "train_config.json"
EVALUATIONS = "evaluations.jsonl"


class NonFiniteError(RuntimeError):
    """A step's loss or gradient norm was NaN/Inf; the step was not applied."""


@dataclasses.dataclass
class StepResult:
    loss: float
    grad_norm: float
    tokens: int  # valid tokens in the global batch
    targets: int  # counted loss targets in the global batch
    stop_requested: bool = False


def model_config(cfg: TrainConfig, init_from: str | None = None) -> GatoConfig:
    """The model's shapes: from the fine-tuning checkpoint when there is one (``init_from``, default
    ``cfg.model.init_from``), else the preset; plus overrides."""
    m = cfg.model
    init_from = init_from or m.init_from
    base = (GatoConfig.from_dict(read_checkpoint_config(init_from)["model"]) if init_from
            else model_preset(m.preset))
    changes: dict[str, Any] = {}
    if m.context is not None:
        changes["context"] = m.context
    if m.dropout is not None:
        changes["dropout"] = m.dropout
    if m.aux_outputs is not None:
        changes["aux_outputs"] = m.aux_outputs
    if m.markov is not None:
        changes["markov"] = m.markov
    return base.replace(**changes)


def to_inputs(batch: Mapping[str, torch.Tensor], device: torch.device) -> tuple[GatoInputs, torch.Tensor, torch.Tensor]:
    """(model inputs, loss_mask, valid) on ``device`` from a collated batch (uint8 pixels -> tokenizer floats)."""
    mv = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    inputs = GatoInputs(tokens=mv["tokens"], patches=data.patches_to_float(mv["pixels"], mv["is_image"]),
                        patch_row=mv["patch_row"], patch_col=mv["patch_col"], local_pos=mv["local_pos"],
                        is_image=mv["is_image"])
    return inputs, mv["loss_mask"], mv["valid"]


def counted_targets(batch: Mapping[str, torch.Tensor]) -> int:
    """Loss targets of a batch: positions t+1 that are targets and valid (``Gato.forward``'s rule)."""
    return int((batch["loss_mask"][:, 1:] & batch["valid"][:, 1:]).sum())


class Trainer:
    def __init__(self, cfg: TrainConfig, dist: DistInfo, *, resume: bool | str = False) -> None:
        cfg.validate_for_training()
        self.cfg, self.dist = cfg, dist
        self.out_dir = Path(cfg.run.out_dir)
        self.ckpt_root = self.out_dir / CHECKPOINTS
        self.device = dist.device
        self.bf16 = cfg.run.precision == "bf16" or (cfg.run.precision == "auto" and self.device.type == "cuda")
        self.micro, self.accum = cfg.per_rank_batch(dist.world_size)
        self._setup_determinism()
        self.init_from = self._resolve_init_from()
        self.model_cfg = model_config(cfg, self.init_from)  # once: it may read the fine-tuning checkpoint's config
        self.bad_episodes: list[str] = []  # episode files skipped as bad (data.on_bad_episode=skip), by path
        self._build_data()
        self._build_model()
        self.step, self.samples, self.tokens_seen = 0, 0, 0
        self.last_aux_loss: float | None = None  # the auxiliary regression loss of the last step (data.aux_extras)
        self._resume(resume)
        self._stop_requested = False
        self._writer: Any = None
        self._last_saved = self.step if self.step else -1

    # -- construction ---------------------------------------------------------------------------------------
    def _resolve_init_from(self) -> str | None:
        """The checkpoint to fine-tune from: a checkpoint folder, or an exported policy folder (a shipped model such
        as models/rgb_stacking_mini), whose PyTorch weights are read directly once its manifest's sha256 of them
        check out (``gato_robot.model.checkpoint.weights_dir``; an export without weights is refused, naming the
        way out). Every rank checks it; nothing is written."""
        src = self.cfg.model.init_from
        if not src:
            return None
        return str(weights_dir(src))

    def _setup_determinism(self) -> None:
        r = self.cfg.run
        if r.threads:
            torch.set_num_threads(r.threads)
        if r.deterministic:
            torch.use_deterministic_algorithms(True)
        random.seed(r.seed)
        np.random.seed(r.seed % 2**32)

    def _build_data(self) -> None:
        if self.cfg.data.domains:
            return self._build_mixture()
        d, c = self.cfg.data, self.cfg
        build = dict(max_damaged=d.max_damaged, successful_only=d.successful_only, drop_observations=d.drop_observations,
                     on_bad=d.on_bad_episode, verify=d.verify_episodes)
        index = data.EpisodeIndex.build(d.train, **build)
        if not index.episodes:
            raise data.DataError(index.describe_empty(d.train))
        if d.eval:
            train_index = index
            eval_index = data.EpisodeIndex.build(d.eval, **build)
            self.bad_episodes += [p for p, _ in eval_index.damaged]
        else:
            train_index, eval_index = index.split(d.eval_fraction)
        self.bad_episodes += [p for p, _ in index.damaged]
        if self.bad_episodes and self.dist.is_main:
            log.warning("%d bad episode files skipped (damaged, unreadable or non-finite; data.on_bad_episode=skip): "
                        "%s", len(self.bad_episodes), self.bad_episodes)
        self.spec = data.first_spec(train_index)
        self.context = self.model_cfg.context
        common = dict(context=self.context, seed=c.run.seed, prompt_fraction=d.prompt_fraction,
                      prompt_end_fraction=d.prompt_end_fraction, prompt_tokens=d.prompt_tokens,
                      max_damaged=d.max_damaged, aux=data.AuxTargets.from_config(d),
                      max_timesteps=1 if self.model_cfg.markov else None, image_shift=d.image_shift,
                      grasp_flag=d.grasp_flag, on_bad=d.on_bad_episode)
        self.domains = [d.domain]
        self.domain_eval_sets: list[Any] = []
        self.domain_specs: dict[str, Any] = {}
        self.train_set = data.WindowDataset(train_index, stream=data.TRAIN_STREAM, train=True, **common)
        self.eval_set = (data.WindowDataset(eval_index, stream=data.EVAL_STREAM, train=False, **common)
                         if len(eval_index) else None)
        if self.dist.is_main:
            log.info("data: %d training episodes, %d held out, %d bad files skipped; context %d tokens",
                     len(train_index), len(eval_index), len(self.bad_episodes), self.context)
            weights = sorted({e.weight for e in train_index.episodes})
            if weights != [1.0]:  # DIR@WEIGHT paths: say what share of the draws each weight gets
                share = {w: float(self.train_set.draw_share([e.weight == w for e in train_index.episodes]))
                         for w in weights}
                log.info("data weights: %s", ", ".join(f"@{w:g}: {100 * s:.1f}% of draws" for w, s in share.items()))

    def _build_mixture(self) -> None:
        """``data.domains``: a deterministic mixture (``training/mixture.py``), held-out data per domain."""
        from gato_robot.training import mixture

        c = self.cfg
        if self.model_cfg.markov:
            raise ValueError("model.markov (one timestep per window) is for a single control domain: text, captions "
                             "and VQA have no timesteps; train a mixture without it")
        self.context = self.model_cfg.context
        self.train_set, self.domain_eval_sets, self.domains, spec, self.domain_specs = mixture.build(c, self.context)
        self.spec = spec if spec is not None else mixture.text_only_spec()
        self.bad_episodes = [p for ds in self.train_set.datasets for p, _ in getattr(getattr(ds, "index", None),
                                                                                     "damaged", [])]
        self.eval_set = next((e for e in self.domain_eval_sets if e is not None), None)
        self.domain_tokens = {name: 0 for name in self.domains}
        if self.dist.is_main:
            log.info("data: %d domains %s, weights %s; context %d tokens", len(self.domains), self.domains,
                     [round(float(w), 3) for w in self.train_set.weights], self.context)

    def _build_model(self) -> None:
        c = self.cfg
        torch.manual_seed(c.run.seed)  # identical initial weights on every rank
        self.model = Gato(self.model_cfg).to(self.device)
        if self.init_from:
            checkpointing.load_weights(self.init_from, self.model)
            if self.dist.is_main:
                log.info("fine-tuning from %s", c.model.init_from)
        self.frozen = freeze(self.model, c.model.freeze) if c.model.freeze else []
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.parallel = distributed.resolve_parallel(c.run.parallel, self.dist)
        self.wrapped = distributed.wrap(self.model, self.parallel, self.dist, bf16=self.bf16)
        if c.run.compile:
            self.wrapped = torch.compile(self.wrapped)
        self.optimizer = build_optimizer(self.model, c.optim, self.device)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        # dropout streams differ per rank (after the shared initialisation); a resume restores them
        torch.manual_seed(c.run.seed + 1_000_003 * (self.dist.rank + 1))

    def _resume(self, resume: bool | str) -> None:
        if not resume:
            return
        path = Path(resume) if isinstance(resume, str) else checkpointing.latest_valid(self.ckpt_root)
        if path is None:
            if self.dist.is_main:
                log.warning("--resume: no valid checkpoint in %s, starting from step 0", self.ckpt_root)
            return
        state = checkpointing.load(path, model=self.model, optimizer=self.optimizer, dist=self.dist)
        self.step, self.samples, self.tokens_seen = state["step"], state["samples"], state["tokens"]
        saved = state.get("config", {})
        for key in ("seed", "batch_size"):
            if saved.get("run", {}).get(key) != getattr(self.cfg.run, key) and self.dist.is_main:
                log.warning("resumed run changes run.%s (%s -> %s): the data order will differ from the original",
                            key, saved.get("run", {}).get(key), getattr(self.cfg.run, key))
        if self.dist.is_main:
            log.info("resumed from %s at step %d (%d sequences seen)", path, self.step, self.samples)

    # -- the loop -------------------------------------------------------------------------------------------
    def _loader(self) -> Iterator[dict[str, torch.Tensor]]:
        sampler = data.StepBatchSampler(start_step=self.step, end_step=self.cfg.run.steps,
                                        global_batch=self.cfg.run.batch_size, micro_batch=self.micro,
                                        rank=self.dist.rank, world_size=self.dist.world_size)
        return iter(data.make_loader(self.train_set, sampler, workers=self.cfg.data.workers,
                                     prefetch=self.cfg.data.prefetch, pin_memory=self.device.type == "cuda"))

    def run(self) -> dict[str, Any]:
        """Train to ``run.steps``; returns a summary. Raises NonFiniteError, data.DataError, ValueError."""
        r = self.cfg.run
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.cfg.write(self.out_dir / CONFIG_FILE)
        if self.step >= r.steps:
            log.info("nothing to do: step %d >= run.steps %d", self.step, r.steps)
            return {"step": self.step}
        previous = signal.signal(signal.SIGTERM, self._on_sigterm) if _main_thread() else None
        bar = self._progress_bar()
        batches = self._loader()
        window = {"t0": time.perf_counter(), "wait": 0.0, "tokens": 0, "steps": 0}
        last: StepResult | None = None
        try:
            while self.step < r.steps:
                t = time.perf_counter()
                micro = [next(batches) for _ in range(self.accum)]
                window["wait"] += time.perf_counter() - t
                lr = lr_at(self.step, self.cfg.optim, r.steps)
                set_lr(self.optimizer, lr)
                last = self.train_step(micro)
                self.step += 1
                self.samples += r.batch_size
                self.tokens_seen += last.tokens
                window["tokens"] += last.tokens
                window["steps"] += 1
                self._record(last, lr, micro, window, bar)
                self._periodic()
                if last.stop_requested:
                    log.warning("SIGTERM: saving step %d and stopping", self.step)
                    break
        finally:
            if bar is not None:
                bar.close()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        if self._last_saved != self.step:
            self.save()
        if self.cfg.data.domains and r.rollout_at_end and self.step >= r.steps:
            summary_rollouts = self.rollouts()
        else:
            summary_rollouts = None
        if self._writer is not None:
            self._writer.close()
        summary = {"step": self.step, "loss": last.loss if last else None, "samples": self.samples,
                   "checkpoint": str(checkpointing.latest_valid(self.ckpt_root)) if self.dist.is_main else None,
                   "bad_episodes": len(self.bad_episodes)}
        if summary_rollouts:
            summary["rollouts"] = summary_rollouts
        if r.export_onnx and self.dist.is_main and self.step >= r.steps:
            summary["onnx"] = self.export()
        return summary

    def train_step(self, micro: Sequence[Mapping[str, torch.Tensor]]) -> StepResult:
        """Forward/backward over the micro-batches, check finiteness, clip, apply AdamW."""
        counts = [counted_targets(b) for b in micro]
        tokens = sum(int(b["valid"].sum()) for b in micro)
        totals = self.dist.all_reduce_sum(torch.tensor([sum(counts), tokens], dtype=torch.float64, device=self.device))
        total_targets, total_tokens = int(totals[0].item()), int(totals[1].item())
        loss_sum = torch.zeros((), dtype=torch.float32, device=self.device)
        aux_sum = torch.zeros((), dtype=torch.float32, device=self.device)
        self.model.train()
        for i, b in enumerate(micro):
            inputs, loss_mask, valid = to_inputs(b, self.device)
            aux = {}
            if "aux" in b:  # data.aux_extras: the auxiliary regression at the separators
                aux = dict(aux_targets=b["aux"].to(self.device), aux_mask=b["aux_mask"].to(self.device))
            with self._grad_sync(i == len(micro) - 1), self._autocast():
                out = self.wrapped(inputs, loss_mask=loss_mask, valid=valid, return_logits=False, **aux)
                # DDP/FSDP average gradients over ranks: weight by this micro-batch's share of the global targets
                weight = counts[i] * self.dist.world_size / max(total_targets, 1)
                total = out.loss * weight
                if out.aux_loss is not None:
                    total = total + out.aux_loss * (self.cfg.data.aux_weight / len(micro))
                    aux_sum += out.aux_loss.detach().float() / len(micro)
                total.backward()
            loss_sum += out.loss.detach().float() * counts[i]
        self.last_aux_loss = float(aux_sum) if aux else None  # this rank's, for the log
        flags = torch.stack([loss_sum, torch.tensor(float(self._stop_requested), device=self.device)])
        flags = self.dist.all_reduce_sum(flags)
        max_norm = self.cfg.optim.grad_clip or math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, max_norm, error_if_nonfinite=False)
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor
            grad_norm = grad_norm.full_tensor()
        loss_v, stop, norm_v = (flags[0] / max(total_targets, 1)).item(), flags[1].item() > 0, float(grad_norm)
        if not (math.isfinite(loss_v) and math.isfinite(norm_v)):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteError(
                f"step {self.step + 1}: non-finite {'loss' if not math.isfinite(loss_v) else 'gradient norm'} "
                f"(loss {loss_v}, grad norm {norm_v}); the step was not applied. The newest checkpoint in "
                f"{self.ckpt_root} is intact: lower optim.lr or check the data, then --resume"
            )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(loss_v, norm_v, total_tokens, total_targets, stop)

    def _grad_sync(self, sync: bool) -> contextlib.AbstractContextManager:
        if self.parallel == "ddp" and not sync:
            return self.wrapped.no_sync()  # type: ignore[operator]
        if self.parallel == "fsdp":
            self.model.set_requires_gradient_sync(sync)  # type: ignore[operator]
        return contextlib.nullcontext()

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self._stop_requested = True  # acted on (by every rank together) at the end of the current step

    # -- logging --------------------------------------------------------------------------------------------
    def _progress_bar(self) -> Any:
        if not (self.dist.is_main and self.cfg.run.progress):
            return None
        from tqdm import tqdm

        return tqdm(total=self.cfg.run.steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)

    def _tb(self) -> Any:
        if self._writer is None and self.dist.is_main and self.cfg.run.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                log.warning("TensorBoard logging off: %s (pip install tensorboard)", e)
                self.cfg.run.tensorboard = False
                return None
            self._writer = SummaryWriter(str(self.out_dir / "tb"), purge_step=self.step or None)
        return self._writer

    def _scalars(self, values: Mapping[str, float]) -> None:
        tb = self._tb()
        if tb is not None:
            for k, v in values.items():
                tb.add_scalar(k, v, self.step)

    def _evaluation(self, values: Mapping[str, float]) -> None:
        """Held-out losses, rollouts and simulated benchmarks: TensorBoard and one JSON line each in
        ``evaluations.jsonl`` (what ``python -m gato_robot.training.curve`` plots)."""
        self._scalars(values)
        if self.dist.is_main:
            with open(self.out_dir / EVALUATIONS, "a") as f:
                f.write(json.dumps({"step": self.step, **{k: float(v) for k, v in values.items()}}) + "\n")

    def _record(self, res: StepResult, lr: float, micro: Sequence[Mapping[str, torch.Tensor]],
                window: dict[str, float], bar: Any) -> None:
        row = {"step": self.step, "loss": res.loss, "grad_norm": res.grad_norm, "lr": lr, "tokens": res.tokens,
               "targets": res.targets}
        if self.last_aux_loss is not None:
            row["aux_loss"] = self.last_aux_loss
        if len(self.domains) > 1:  # per-domain sequences, tokens and targets of this step (this rank's share)
            row["domains"] = self._domain_counts(micro)
            for name, n in row["domains"].items():
                self.domain_tokens[name] = self.domain_tokens.get(name, 0) + n["tokens"]
        if self.dist.is_main:
            with open(self.out_dir / METRICS, "a") as f:
                f.write(json.dumps(row) + "\n")
        if bar is not None:
            bar.update(1)
        if self.step % self.cfg.run.log_every and self.step != self.cfg.run.steps:
            return
        elapsed = time.perf_counter() - window["t0"]
        tok_s = window["tokens"] / max(elapsed, 1e-9)
        scalars = {"train/loss": res.loss, "train/lr": lr, "train/grad_norm": res.grad_norm,
                   "perf/tokens_per_s": tok_s, "perf/step_s": elapsed / max(window["steps"], 1),
                   "perf/data_wait_frac": window["wait"] / max(elapsed, 1e-9)}
        scalars.update({f"train/loss_{k}": v for k, v in self._domain_losses(micro, res.loss).items()})
        if self.last_aux_loss is not None:
            scalars["train/aux_loss"] = self.last_aux_loss
        if len(self.domains) > 1:
            scalars.update({f"data/tokens_{k}": float(v) for k, v in self.domain_tokens.items()})
        if self.dist.is_main:
            self._scalars(scalars)
            if bar is not None:
                extra = {} if self.last_aux_loss is None else {"aux": f"{self.last_aux_loss:.4f}"}
                bar.set_postfix(loss=f"{res.loss:.4f}", **extra, tok_s=f"{tok_s:,.0f}", lr=f"{lr:.2e}")
            else:
                log.info("step %d loss %.4f lr %.2e grad_norm %.3f tokens/s %.0f data_wait %.0f%%", self.step,
                         res.loss, lr, res.grad_norm, tok_s, 100 * scalars["perf/data_wait_frac"])
        window.update(t0=time.perf_counter(), wait=0.0, tokens=0, steps=0)

    def _domain_counts(self, micro: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, dict[str, int]]:
        out = {}
        for d, name in enumerate(self.domains):
            rows = [b["domain"] == d for b in micro]
            seqs = sum(int(r.sum()) for r in rows)
            if seqs:
                out[name] = {"sequences": seqs,
                             "tokens": sum(int(b["valid"][r].sum()) for b, r in zip(micro, rows)),
                             "targets": sum(counted_targets({k: v[r] for k, v in b.items()}) for b, r in zip(micro, rows))}
        return out

    def _domain_losses(self, micro: Sequence[Mapping[str, torch.Tensor]], total: float) -> dict[str, float]:
        """Per-domain loss of the last step. One domain: the total. Several: an extra no-grad forward per domain
        on log steps only (``forward`` returns one mean, so the split needs its own pass)."""
        ids = sorted({int(d) for b in micro for d in b["domain"].tolist()})
        if len(self.domains) == 1 and ids in ([], [0]):
            return {self.domains[0]: total}
        return self._loss_by_domain(micro)

    @torch.no_grad()
    def _loss_by_domain(self, batches: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, float]:
        sums = torch.zeros(len(self.domains), 2, dtype=torch.float64, device=self.device)
        for b in batches:
            for d in range(len(self.domains)):
                rows = b["domain"] == d
                sub = {k: v[rows] for k, v in b.items()}
                n = counted_targets(sub) if rows.any() else 0
                if n:  # TODO(multi-domain + FSDP): ranks must then run the same number of forwards
                    inputs, loss_mask, valid = to_inputs(sub, self.device)
                    with self._autocast():
                        out = self.model(inputs, loss_mask=loss_mask, valid=valid, return_logits=False)
                    sums[d, 0] += out.loss.double() * n
                    sums[d, 1] += n
        sums = self.dist.all_reduce_sum(sums)
        return {name: (sums[d, 0] / sums[d, 1]).item() for d, name in enumerate(self.domains) if sums[d, 1] > 0}

    # -- evaluation and checkpoints -------------------------------------------------------------------------
    def _periodic(self) -> None:
        r = self.cfg.run
        if r.eval_every and self.step % r.eval_every == 0 and self.eval_set is not None:
            self.evaluate()
        if r.checkpoint_every and self.step % r.checkpoint_every == 0:
            self.save()
        if r.sim_eval_every and self.step % r.sim_eval_every == 0:
            self.sim_benchmark()
        if r.rollout_every and self.step % r.rollout_every == 0 and self.step != r.steps:
            self.rollouts()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Held-out loss on fixed sequences (eval-mode patch positions, no dropout): the first
        ``eval_batches * batch_size`` of the held-out stream, whatever the number of ranks."""
        assert self.eval_set is not None
        if len(self.domains) > 1:
            return self._evaluate_domains()
        chunks = self.cfg.run.eval_batches * self.cfg.run.batch_size // self.micro
        self.model.eval()
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)
        rounds = -(-chunks // self.dist.world_size)  # every rank runs as many forwards (FSDP's collectives)
        for j in range(rounds):
            k = j * self.dist.world_size + self.dist.rank
            b = data.collate_samples([self.eval_set[(k % chunks) * self.micro + i] for i in range(self.micro)])
            count = counted_targets(b) if k < chunks else 0
            inputs, loss_mask, valid = to_inputs(b, self.device)
            with self._autocast():
                out = self.model(inputs, loss_mask=loss_mask, valid=valid, return_logits=False)
            sums += torch.tensor([out.loss.double().item() * count, count], dtype=torch.float64, device=self.device)
        self.model.train()
        sums = self.dist.all_reduce_sum(sums)
        loss = (sums[0] / sums[1].clamp(min=1)).item()
        result = {"eval/loss": loss, f"eval/loss_{self.domains[0]}": loss}
        if self.dist.is_main:
            self._evaluation(result)
            log.info("step %d held-out loss %.4f", self.step, loss)
        return result

    def _evaluate_domains(self) -> dict[str, float]:
        """Held-out loss per domain: the first ``eval_batches * batch_size`` sequences of each domain's held-out
        stream (fixed, eval-mode patch positions), split over ranks; plus their target-weighted total."""
        n = self.cfg.run.eval_batches * self.cfg.run.batch_size
        self.model.eval()
        sums = torch.zeros(len(self.domains), 2, dtype=torch.float64, device=self.device)
        for d, ds in enumerate(self.domain_eval_sets):
            if ds is None:
                continue
            for start in range(self.dist.rank * self.micro, n, self.micro * self.dist.world_size):
                b = data.collate_samples([ds[i] for i in range(start, min(start + self.micro, n))])
                count = counted_targets(b)
                inputs, loss_mask, valid = to_inputs(b, self.device)
                with self._autocast():
                    out = self.model(inputs, loss_mask=loss_mask, valid=valid, return_logits=False)
                sums[d] += torch.tensor([out.loss.double().item() * count, count], dtype=torch.float64,
                                        device=self.device)
        self.model.train()
        sums = self.dist.all_reduce_sum(sums)
        total = sums.sum(0)
        result = {"eval/loss": (total[0] / total[1].clamp(min=1)).item()}
        result.update({f"eval/loss_{name}": (sums[d, 0] / sums[d, 1]).item()
                       for d, name in enumerate(self.domains) if sums[d, 1] > 0})
        if self.dist.is_main:
            self._evaluation(result)
            log.info("step %d held-out loss %s", self.step, {k: round(v, 4) for k, v in result.items()})
        return result

    def rollouts(self) -> dict[str, float]:
        """Success rates from rolling out the current weights in each domain's environment (actions sampled at
        ``run.rollout_temperature``): the domains with ``rollout_tasks``, ``run.rollout_episodes`` episodes per task
        (rank 0; others wait). Also written to ``<out_dir>/rollouts.jsonl``. A failing environment is logged, never
        fatal."""
        from gato_robot.domains import rollouts as env_rollouts
        from gato_robot.model.policy import TorchPolicy

        result: dict[str, float] = {}
        episodes = self.cfg.run.rollout_episodes
        threads = torch.get_num_threads()
        if self.dist.is_main and episodes:
            torch.set_num_threads(1)  # one step is a few tiny matmuls: more threads only add contention (8x slower)
            for d in self.cfg.data.domains:
                if not d.rollout_tasks or d.name not in self.domain_specs:
                    continue
                policy = TorchPolicy(self.model, self.domain_specs[d.name], device=self.device,
                                     temperature=self.cfg.run.rollout_temperature, seed=self.cfg.run.seed)
                for task in d.rollout_tasks:
                    try:
                        r = env_rollouts.rollout(d.kind, policy, task, episodes)
                    except Exception as e:  # a missing simulator or an env error must not take the run down
                        log.warning("rollout %s/%s failed: %s: %s", d.name, task, type(e).__name__, e)
                        continue
                    result[f"rollout/success_{d.name}_{task}"] = r.success_rate
                    with open(self.out_dir / "rollouts.jsonl", "a") as f:
                        f.write(json.dumps({"step": self.step, "domain": d.name, **r.as_dict()}) + "\n")
                    log.info("step %d rollout %s %s: success %d/%d (%.1f%%)", self.step, d.name, task, r.successes,
                             r.episodes, 100 * r.success_rate)
            self.model.train()
            torch.set_num_threads(threads)
            self._evaluation(result)
        self.dist.barrier()
        return result

    def _trainer_state(self) -> dict[str, Any]:
        return {"samples": self.samples, "tokens": self.tokens_seen, "world_size": self.dist.world_size,
                "schedule_step": self.step, "data_position": {"next_step": self.step, "next_sample": self.samples},
                "config": self.cfg.to_dict(), "n_params": self.n_params}

    def save(self) -> Path | None:
        path = checkpointing.save(
            self.ckpt_root, self.step, model=self.model, optimizer=self.optimizer, spec=self.spec,
            tokenizer_settings=Tokenizer(self.spec).settings, trainer_state=self._trainer_state(), dist=self.dist,
            keep=self.cfg.run.keep_checkpoints, write_delay_s=self.cfg.run.checkpoint_write_delay_s,
        )
        self._last_saved = self.step
        if path is not None:
            log.info("checkpoint %s", path)
        return path

    def sim_benchmark(self) -> dict[str, float] | None:
        """Run the simulated benchmark on the current weights (rank 0; others wait)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        result = None
        if self.dist.is_main:
            ok, why = hooks.sim_benchmark_available()
            if ok:
                target = self.out_dir / "sim_eval" / f"step_{self.step:09d}"
                save_checkpoint(target, checkpointing._StateView(self.model.config, state),  # type: ignore[arg-type]
                                self.spec, Tokenizer(self.spec).settings, metadata={"step": self.step})
                result = hooks.run_sim_benchmark(target, episodes=self.cfg.run.sim_eval_episodes,
                                                 seed=self.cfg.run.sim_eval_seed,
                                                 temperature=self.cfg.run.rollout_temperature)
                if result:
                    self._evaluation({f"sim/{k}": v for k, v in result.items()})
                    log.info("step %d simulated benchmark: %s", self.step, result)
            else:
                log.info("simulated benchmark skipped: %s", why)
        self.dist.barrier()
        return result

    def export(self) -> str | None:
        latest = checkpointing.latest_valid(self.ckpt_root)
        if latest is None:
            log.warning("ONNX export skipped: no valid checkpoint in %s", self.ckpt_root)
            return None
        try:
            out = hooks.export_onnx(latest, self.out_dir / "onnx")
        except hooks.ExportUnavailable as e:
            log.warning("%s", e)
            return None
        except Exception as e:  # a failed export (checks, parity, exporter bug) must not lose the run's result
            log.error("ONNX export of %s failed: %s: %s", latest, type(e).__name__, e)
            return None
        log.info("exported the ONNX policy to %s", out)
        return str(out)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def export_latest(out_dir: str | Path) -> str:
    """Export the newest valid checkpoint of a run folder to ``<out_dir>/onnx`` (``--export-only``)."""
    from gato_robot.model.checkpoint import CheckpointError

    latest = checkpointing.latest_valid(Path(out_dir) / CHECKPOINTS)
    if latest is None:
        raise CheckpointError(f"no valid checkpoint under {Path(out_dir) / CHECKPOINTS}")
    return str(hooks.export_onnx(latest, Path(out_dir) / "onnx"))
