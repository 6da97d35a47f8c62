"""Training configuration: typed dataclass sections that validate themselves, named presets, CLI overrides.

``TrainConfig`` = ``model`` + ``data`` + ``optim`` + ``run`` sections. A preset fills every field; the command
line overrides single fields (``--set optim.lr=3e-4``) and the resolved config is written as JSON beside the
checkpoints (``<out_dir>/train_config.json``) so every run can be reproduced from its directory.

Paper values (Gato, appendix; marked (A) in docs/reference): AdamW beta 0.9/0.95, linear warm-up 15k steps,
cosine decay to 0.1x over the run, weight decay 0.1, batch 512 x 1024 tokens; fine-tuning with a constant
learning rate 1e-5, batch 64, dropout 0.1; 25% of sequences prompt-conditioned (half from an episode's end).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from gato_robot.core import specs

SCHEDULES = ("cosine", "constant")
PRECISIONS = ("auto", "bf16", "fp32")
DEVICES = ("auto", "cpu", "cuda")
PARALLEL = ("auto", "none", "ddp", "fsdp")
BAD_EPISODE = ("skip", "error")


def _positive(section: str, **values: Any) -> None:
    for name, v in values.items():
        if v is not None and (isinstance(v, bool) or v <= 0):
            raise ValueError(f"{section}.{name} must be positive, got {v!r}")


def _fraction(section: str, **values: float) -> None:
    for name, v in values.items():
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{section}.{name} must be in [0, 1], got {v!r}")


def _choice(section: str, name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{section}.{name} must be one of {list(choices)}, got {value!r}")


@dataclasses.dataclass
class ModelSection:
    """Which network: a model preset (``gato_robot.model.config.PRESETS``) with a few fields overridden."""

    preset: str = "tiny"
    context: int | None = None  # tokens per training sequence; None: the preset's (1024)
    dropout: float | None = None  # None: the preset's (0.0); the paper fine-tunes with 0.1
    init_from: str | None = None  # a checkpoint directory (model.safetensors + config.json) or an exported policy folder
    freeze: tuple[str, ...] = ()  # glob patterns over parameter names, e.g. "embed.*", "blocks.[0-3].*"
    aux_outputs: int | None = None  # training-only auxiliary head (data.aux_extras); None: the base model's
    markov: bool | None = None  # one timestep per window, no history at inference (GatoConfig.markov); None: the
    #                            base model's. Set the context to one timestep + 1 token: the rest would be padding

    def __post_init__(self) -> None:
        self.freeze = tuple(self.freeze)
        _positive("model", context=self.context)
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")


DOMAIN_KINDS = ("babyai", "metaworld", "rgb_stacking", "episodes", "text", "caption", "vqa")  # gato_robot.domains


@dataclasses.dataclass
class DomainConfig:
    """One data source of a multi-domain mixture (``data.domains``; see docs/domains.md).

    ``kind``: control episodes (``babyai``, ``metaworld``, ``rgb_stacking``, ``episodes``: HDF5 episode folders),
    ``text`` (.txt/.md/.jsonl files, Hugging Face .parquet/.arrow shards; files, folders or globs), ``caption``
    (COCO captions JSON + images, or image-text shards) or ``vqa`` (VQA v1/v2 questions + annotations JSON + images).
    ``weight``: relative sampling probability. ``rollout_tasks``: levels/tasks/triplets evaluated by rolling out the
    policy (babyai, metaworld, rgb_stacking). On the command line: ``--set data.domains=babyai:DIR@2#GoToRedBall,
    text:FILE_OR_DIR@0.5`` (kind:paths@weight#rollout tasks, paths and tasks joined by '+', name = kind), then any
    other field of a domain by its name: ``--set data.domains.vqa.image_pattern=COCO_val2014_{image_id:012d}.jpg``;
    or a ``--config`` JSON.
    """

    name: str
    kind: str
    paths: tuple[str, ...] = ()
    weight: float = 1.0
    eval_paths: tuple[str, ...] = ()  # held-out data; empty: data.eval_fraction of this domain's data
    return_fraction: float = 0.8  # Gato's filter (control): keep return >= this x the expert's; 0 keeps all
    image_size: int = 64  # caption/vqa: images resized to this square size (multiple of 16)
    # caption/vqa: the image folder ({split}: the JSON file's split, e.g. coco/{split} -> coco/val2014); None:
    # <json folder>/images, or COCO/VQA's own layout
    images: str | None = None
    # vqa: image file names, fields {image_id} (e.g. {image_id:012d}) and {split} (the questions file's subtype,
    # e.g. val2014); None: COCO_<split>_<12-digit id>.jpg, <12-digit id>.jpg, ... whichever finds the images
    image_pattern: str | None = None
    # text: the JSONL field / shard column holding a document (None: "text"); caption shards: the caption column
    # (None: "caption", else "text")
    text_field: str | None = None
    rollout_tasks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.paths, self.eval_paths, self.rollout_tasks = tuple(self.paths), tuple(self.eval_paths), tuple(
            self.rollout_tasks)
        where = f"data.domains[{self.name!r}]"
        if not self.name:
            raise ValueError("data.domains: every domain needs a name")
        _choice(where, "kind", self.kind, DOMAIN_KINDS)
        if not self.paths:
            raise ValueError(f"{where}: no paths; point it at the generated or downloaded data")
        if not self.weight > 0:
            raise ValueError(f"{where}.weight must be positive, got {self.weight}")
        _fraction(where, return_fraction=self.return_fraction)
        if self.image_size <= 0 or self.image_size % 16:
            raise ValueError(f"{where}.image_size must be a positive multiple of 16, got {self.image_size}")
        if self.image_pattern is not None:
            if self.kind != "vqa":
                raise ValueError(f"{where}.image_pattern names VQA images; a {self.kind} domain does not read it")
            try:
                self.image_pattern.format(image_id=42, split="val2014")
            except (KeyError, IndexError, ValueError) as e:
                raise ValueError(f"{where}.image_pattern {self.image_pattern!r}: the fields are {{image_id}} and "
                                 f"{{split}}, e.g. COCO_{{split}}_{{image_id:012d}}.jpg ({type(e).__name__}: {e})") from e
        if self.rollout_tasks and self.kind not in ("babyai", "metaworld", "rgb_stacking"):
            raise ValueError(f"{where}: rollout_tasks need an environment (babyai, metaworld, rgb_stacking)")

    @classmethod
    def parse(cls, text: str) -> DomainConfig:
        """``kind:path[+path...][@weight][#rollout_task[+task...]]`` (name = kind), the command-line form."""
        text, _, tasks = text.partition("#")
        body, _, weight = text.partition("@")
        kind, sep, paths = body.partition(":")
        if not sep:
            raise ValueError(f"domain {text!r}: expected kind:path[+path...][@weight], e.g. babyai:runs/d/babyai@2")
        return cls(name=kind, kind=kind, paths=tuple(p for p in paths.split("+") if p),
                   weight=float(weight) if weight else 1.0, rollout_tasks=tuple(t for t in tasks.split("+") if t))


@dataclasses.dataclass
class DataSection:
    """Where episodes come from and how training sequences are cut from them (see ``training/data.py``)."""

    train: tuple[str, ...] = ()  # episode files or folders (searched recursively for *.h5); DIR@3: weighted 3x
    eval: tuple[str, ...] = ()  # held-out episodes; empty: ``eval_fraction`` of the training episodes
    eval_fraction: float = 0.05
    domain: str = "rgb_stacking"  # name for per-domain loss curves
    prompt_fraction: float = 0.25  # Gato: 25% of sequences get a prompt from another episode of the task
    prompt_end_fraction: float = 0.5  # of those, half from the other episode's end (goal), half uniform
    prompt_tokens: int | None = None  # longest prompt; None: a quarter of the context
    successful_only: bool = False  # keep only episodes whose metadata says success (the paper's filter)
    drop_observations: tuple[str, ...] = ()  # observation keys the model never sees, e.g. proprio/previous_action
    workers: int = 2  # DataLoader worker processes per rank (0: load in the training process)
    prefetch: int = 4  # batches prefetched per worker
    max_damaged: int = 10  # damaged episode files skipped (with their path) before the run stops
    # a damaged, unreadable or non-finite (NaN/Inf) episode file: "skip" names it, skips it and counts it in the
    # report (up to max_damaged), "error" stops the run at the first one, naming it (exit 3)
    on_bad_episode: Literal["skip", "error"] = "skip"
    # read every episode's non-image data once at start (CRC rows, NaN/Inf), so bad files are found by name before
    # the first step (about 50 ms per 400-step file); false: headers only, bad windows are found (and the file
    # counted) when drawn
    verify_episodes: bool = True
    domains: tuple[DomainConfig, ...] = ()  # a multi-domain mixture (replaces train/eval/domain when given)
    # auxiliary targets (training signal only, never an input): at each timestep's separator the model regresses
    # extras/<aux_extras>[t][..., :aux_take] (e.g. object_poses -> the three objects' positions), centred on
    # aux_center and divided by aux_scale, weighted by aux_weight against the action loss; "" disables
    aux_extras: str = ""
    aux_take: int = 3
    aux_center: tuple[float, ...] = ()
    aux_scale: float = 0.1
    aux_weight: float = 1.0
    # random-shift augmentation of training images: each camera of a window moves by up to this many pixels each
    # way (edge pixels repeated), the same shift at every timestep of the window; 0 disables (held-out: never)
    image_shift: int = 0
    # the grasp flag (proprio/gripper's third value) trained on: "stored" as recorded, or "fingers": re-derived
    # from the recorded opening, its velocity and the previous gripper command by core.gripper.GraspDetector, the
    # rule of the ROS tokenizer and of the simulator's default (data recorded before with the contact test)
    grasp_flag: str = "stored"

    def __post_init__(self) -> None:
        _choice("data", "on_bad_episode", self.on_bad_episode, BAD_EPISODE)
        if self.grasp_flag not in ("stored", "fingers"):
            raise ValueError(f"data.grasp_flag must be stored or fingers, got {self.grasp_flag!r}")
        if self.image_shift < 0:
            raise ValueError(f"data.image_shift must be >= 0 pixels, got {self.image_shift}")
        self.aux_center = tuple(float(x) for x in self.aux_center)
        if self.aux_take <= 0 or self.aux_scale <= 0 or self.aux_weight < 0:
            raise ValueError("data.aux_take and data.aux_scale must be > 0 and data.aux_weight >= 0")
        if self.aux_center and len(self.aux_center) != self.aux_take:
            raise ValueError(f"data.aux_center has {len(self.aux_center)} values for aux_take={self.aux_take}")
        self.train = tuple(self.train)
        self.eval = tuple(self.eval)
        self.drop_observations = tuple(self.drop_observations)
        self.domains = tuple(
            d if isinstance(d, DomainConfig) else DomainConfig.parse(d) if isinstance(d, str) else DomainConfig(**d)
            for d in self.domains
        )
        if self.aux_extras and self.domains:
            raise ValueError("data.aux_extras works with single-domain runs (data.train), not data.domains")
        if self.image_shift and self.domains:
            raise ValueError("data.image_shift works with single-domain runs (data.train), not data.domains")
        names = [d.name for d in self.domains]
        if len(set(names)) != len(names):
            raise ValueError(f"data.domains: names must be unique, got {names}")
        _fraction("data", eval_fraction=self.eval_fraction, prompt_fraction=self.prompt_fraction,
                  prompt_end_fraction=self.prompt_end_fraction)
        _positive("data", prompt_tokens=self.prompt_tokens, prefetch=self.prefetch)
        if self.workers < 0 or self.max_damaged < 0:
            raise ValueError("data.workers and data.max_damaged must be >= 0")
        if not self.domain:
            raise ValueError("data.domain must be a non-empty name (it labels the per-domain loss)")


@dataclasses.dataclass
class OptimSection:
    """AdamW and its learning-rate schedule (a pure function of the step, ``training/optim.py``)."""

    lr: float = 1e-4  # peak learning rate
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = 15_000
    decay_steps: int | None = None  # cosine length; None: the run's total steps
    min_lr_ratio: float = 0.1  # cosine ends at 0.1x peak (Gato)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping (the norm is still logged)

    def __post_init__(self) -> None:
        _choice("optim", "schedule", self.schedule, SCHEDULES)
        _positive("optim", lr=self.lr, decay_steps=self.decay_steps, eps=self.eps)
        _fraction("optim", min_lr_ratio=self.min_lr_ratio, beta1=self.beta1, beta2=self.beta2)
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("optim.warmup_steps, optim.weight_decay and optim.grad_clip must be >= 0")


@dataclasses.dataclass
class RunSection:
    """Length, batch, devices, logging, evaluation and checkpoint cadence of one run."""

    out_dir: str = "runs/gato"
    steps: int = 1000
    batch_size: int = 8  # global sequences per optimizer step (all ranks, all micro-batches)
    micro_batch: int | None = None  # sequences per rank per forward; None: batch_size / world size
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    compile: bool = False  # torch.compile the model
    parallel: Literal["auto", "none", "ddp", "fsdp"] = "auto"  # auto: DDP when launched with >1 process
    deterministic: bool = False  # torch.use_deterministic_algorithms (CPU resume exactness)
    threads: int | None = None  # torch intra-op threads; None: torch's default
    log_every: int = 10
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    eval_every: int = 1000  # held-out loss; 0 disables
    eval_batches: int = 4
    sim_eval_every: int = 0  # simulated benchmark with the current weights; 0 disables
    sim_eval_episodes: int = 5  # per test triplet
    sim_eval_seed: int = 1_000_000  # same seeds at every evaluation (a fair learning curve), not the benchmark's
    rollout_every: int = 0  # multi-domain: roll out the policy in each domain's environment; 0: only at the end
    rollout_episodes: int = 10  # episodes per rollout task
    rollout_temperature: float = 1.0  # rollouts and the simulated benchmark sample actions (as Gato); 0: greedy
    #                                  (loops in BabyAI; a stationary greedy RGB-stacking policy stalls, stacking.md)
    rollout_at_end: bool = True
    export_onnx: bool = False  # export the ONNX policy and its manifest at the end
    progress: bool = True  # tqdm progress bar (rank 0)
    tensorboard: bool = True
    checkpoint_write_delay_s: float = 0.0  # test hook: pause after each checkpoint file (SIGKILL tests)

    def __post_init__(self) -> None:
        _choice("run", "device", self.device, DEVICES)
        _choice("run", "precision", self.precision, PRECISIONS)
        _choice("run", "parallel", self.parallel, PARALLEL)
        _positive("run", steps=self.steps, batch_size=self.batch_size, micro_batch=self.micro_batch,
                  threads=self.threads, log_every=self.log_every, checkpoint_every=self.checkpoint_every,
                  keep_checkpoints=self.keep_checkpoints, eval_batches=self.eval_batches,
                  sim_eval_episodes=self.sim_eval_episodes)
        if self.rollout_every < 0 or self.rollout_episodes < 0:
            raise ValueError("run.rollout_every and run.rollout_episodes must be >= 0")
        from gato_robot.runtime.contract import check_temperature  # the policy contract's one check (numpy only)

        check_temperature(self.rollout_temperature, "run.rollout_temperature")
        if self.eval_every < 0 or self.sim_eval_every < 0 or self.checkpoint_write_delay_s < 0:
            raise ValueError("run.eval_every, run.sim_eval_every and run.checkpoint_write_delay_s must be >= 0")
        if not self.out_dir:
            raise ValueError("run.out_dir must name a folder for checkpoints and logs")


@dataclasses.dataclass
class TrainConfig:
    model: ModelSection = dataclasses.field(default_factory=ModelSection)
    data: DataSection = dataclasses.field(default_factory=DataSection)
    optim: OptimSection = dataclasses.field(default_factory=OptimSection)
    run: RunSection = dataclasses.field(default_factory=RunSection)
    name: str = "custom"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name != "name" and isinstance(getattr(self, f.name), Mapping):
                setattr(self, f.name, _build(_SECTIONS[f.name], getattr(self, f.name)))

    # -- derived values ------------------------------------------------------------------------------------
    def per_rank_batch(self, world_size: int) -> tuple[int, int]:
        """(micro-batch per rank, micro-batches per step) for ``world_size`` processes."""
        b = self.run.batch_size
        if b % world_size:
            raise ValueError(f"run.batch_size {b} is not divisible by the {world_size} processes; "
                             f"use a multiple of {world_size}")
        per_rank = b // world_size
        micro = self.run.micro_batch or per_rank
        if per_rank % micro:
            raise ValueError(f"run.micro_batch {micro} must divide the per-process batch {per_rank} "
                             f"(run.batch_size {b} / {world_size} processes)")
        return micro, per_rank // micro

    def validate_for_training(self) -> None:
        """Checks that need the whole config (called before a run starts, not on every construction)."""
        if self.name == "finetune" and not self.model.init_from:
            raise ValueError("the finetune preset starts from a trained model: pass --init-from CHECKPOINT_DIR "
                             "(a folder with model.safetensors + config.json, e.g. <run>/checkpoints/step_...)")
        if not self.data.train and not self.data.domains:
            raise ValueError("no training data: pass --data DIR (episode folder), --set data.train=DIR1,DIR2 or a "
                             "multi-domain mixture (data.domains, e.g. --preset tiny-multidomain)")
        if self.optim.schedule == "cosine" and self.optim.warmup_steps >= (self.optim.decay_steps or self.run.steps):
            raise ValueError(
                f"optim.warmup_steps {self.optim.warmup_steps} >= the cosine length "
                f"{self.optim.decay_steps or self.run.steps}; lower warmup_steps or use --set optim.schedule=constant"
            )

    # -- serialisation -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))  # tuples -> lists, plain JSON types

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        return _build(cls, d)

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)
        return path


_SECTIONS: dict[str, type] = {"model": ModelSection, "data": DataSection, "optim": OptimSection, "run": RunSection}


def _build(cls: type, d: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}; known: {sorted(names)}")
    kwargs = {}
    for k, v in d.items():
        if k in _SECTIONS and cls is TrainConfig:
            kwargs[k] = v if dataclasses.is_dataclass(v) else _build(_SECTIONS[k], v)
        else:
            kwargs[k] = _coerce(v, hints[k], k)
    return cls(**kwargs)


# ----------------------------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------------------------
def _pretrain(model: str, micro_batch: int, parallel: str = "auto") -> TrainConfig:
    """The paper's pre-training recipe for one model size (batch 512 x 1024 tokens, 1M steps)."""
    return TrainConfig(
        name=model,
        model=ModelSection(preset=model),
        data=DataSection(workers=8),
        optim=OptimSection(lr=1e-4, warmup_steps=15_000),
        run=RunSection(out_dir=f"runs/gato-{model}", steps=1_000_000, batch_size=512, micro_batch=micro_batch,
                       parallel=parallel, log_every=10, checkpoint_every=2000, eval_every=2000, sim_eval_every=20_000),
    )


def _demo_domains(root: str) -> tuple[DomainConfig, ...]:
    """The domains ``python -m gato_robot.domains.generate all --out ROOT`` writes, weighted towards control."""
    return (
        DomainConfig("babyai", "babyai", (f"{root}/babyai",), weight=0.3, rollout_tasks=("GoToRedBall",)),
        DomainConfig("metaworld", "metaworld", (f"{root}/metaworld",), weight=0.55, rollout_tasks=("reach-v3",)),
        DomainConfig("text", "text", (f"{root}/text",), weight=0.05),
        DomainConfig("caption", "caption", (f"{root}/scenes",), weight=0.05),
        DomainConfig("vqa", "vqa", (f"{root}/scenes",), weight=0.05),
    )


def _presets() -> dict[str, TrainConfig]:
    return {
        # A few minutes on a laptop CPU: the tiny model on small-image episodes.
        "tiny-cpu": TrainConfig(
            name="tiny-cpu",
            model=ModelSection(preset="tiny", context=256),
            data=DataSection(workers=0),
            optim=OptimSection(lr=1e-3, warmup_steps=20, weight_decay=0.1),
            run=RunSection(out_dir="runs/gato-tiny", steps=200, batch_size=8, device="cpu", precision="fp32",
                           log_every=10, checkpoint_every=50, eval_every=50, eval_batches=2),
        ),
        # Issue 8's target run: a tiny model on the generated BabyAI, Meta-World, text, caption and VQA data (CPU, one
        # thread, ~25 min idle, 44 min on a shared 2-core machine). Generate the data first:
        # python -m gato_robot.domains.generate all --out runs/domains
        "tiny-multidomain": TrainConfig(
            name="tiny-multidomain",
            model=ModelSection(preset="tiny", context=256),
            data=DataSection(workers=1, prompt_fraction=0.0, domains=_demo_domains("runs/domains")),
            optim=OptimSection(lr=1e-3, warmup_steps=50, weight_decay=0.1),
            run=RunSection(out_dir="runs/gato-multidomain", steps=2400, batch_size=16, device="cpu", precision="fp32",
                           threads=1,
                           log_every=25, checkpoint_every=400, eval_every=400, eval_batches=2, rollout_every=0,
                           rollout_episodes=50),
        ),
        # Issue 10's CPU recipe: an image-based RGB-stacking policy from scripted-expert demonstrations of the five
        # test triplets (skill mastery), two 64x64 cameras (67 tokens per timestep, 3 timesteps per sequence).
        # Data: python -m gato_robot.sim.collect --triplets test --episodes-per-triplet 40 --cameras 2
        #       --image-size 64 --seed 100000 --successful-only --out runs/stack_data/mastery64
        "stacking-cpu": _stacking_cpu(),
        # The shipped model's recipe (models/rgb_stacking_mini; docs/stacking.md, runs 17-31): a Markov policy
        # (one 56-token timestep per window), batch 32, the auxiliary object-position head, random image shifts,
        # the grasp flag from the fingers, fine-tuning rates (lr 3e-4). Its default data: run 20's, the feedback
        # expert's demonstrations, DART noise and seven DAgger rounds on the test triplets (the shipped run 31 trained
        # on other sets: its model card; its last 2,000 steps ran with --set data.image_shift=0 --set optim.lr=1e-4).
        # Continue the shipped model with --init-from models/rgb_stacking_mini (the trainer imports the ONNX graph's
        # weights).
        "stacking-fb": _stacking_fb(),
        # Fine-tune the shipped model on recorded demonstrations (gato-record-demos / gato-record --operator, then
        # gato-log-convert): as the shipped model's last phase (lr 1e-4, unshifted images), constant lr, the
        # operator's successes only, no auxiliary head (a robot's logs carry no object poses). --init-from and
        # --data name the model and the converted episodes (docs/logs.md, "Fine-tuning on the demonstrations").
        "stacking-demos": _stacking_demos(),
        "79M": _pretrain("79M", micro_batch=32),
        "364M": _pretrain("364M", micro_batch=16),
        # 1.18B with AdamW state is ~19 GB before activations: shard parameters, gradients and optimizer state.
        "1.18B": _pretrain("1.18B", micro_batch=8, parallel="fsdp"),
        # Gato fine-tuning (appendix): constant lr 1e-5, batch 64, dropout 0.1, from a pre-trained checkpoint.
        "finetune": TrainConfig(
            name="finetune",
            model=ModelSection(preset="tiny", dropout=0.1),
            data=DataSection(workers=4, prompt_fraction=0.25),
            optim=OptimSection(lr=1e-5, schedule="constant", warmup_steps=0, weight_decay=0.0),
            run=RunSection(out_dir="runs/gato-finetune", steps=10_000, batch_size=64, log_every=10,
                           checkpoint_every=500, eval_every=500),
        ),
    }


def _stacking_cpu() -> TrainConfig:
    return TrainConfig(
        name="stacking-cpu",
        model=ModelSection(preset="mini", context=201),
        data=DataSection(train=("runs/stack_data/mastery64",), workers=1, prompt_fraction=0.0,
                         domain="rgb_stacking"),
        optim=OptimSection(lr=1e-3, warmup_steps=100, weight_decay=0.1),
        run=RunSection(out_dir="runs/stacking-cpu", steps=3000, batch_size=16, device="cpu", precision="fp32",
                       log_every=25, checkpoint_every=500, keep_checkpoints=10, eval_every=500, eval_batches=4,
                       sim_eval_every=750, sim_eval_episodes=4, export_onnx=True),
    )


def _stacking_fb() -> TrainConfig:
    base = _stacking_cpu()
    sets = ("fb_demo", "fb_dart03", *(f"fb_dagger{i}" for i in range(1, 8)))
    return dataclasses.replace(
        base, name="stacking-fb",
        model=dataclasses.replace(base.model, context=56, markov=True, aux_outputs=9),
        data=dataclasses.replace(base.data, train=tuple(f"runs/stack_data/{s}" for s in sets),
                                 drop_observations=(specs.PREVIOUS_ACTION_KEY, specs.JOINT_VELOCITIES_KEY),
                                 aux_extras="object_poses", aux_take=3, aux_center=(0.6, 0.0, 0.03), aux_scale=0.05,
                                 image_shift=4, grasp_flag="fingers"),
        optim=dataclasses.replace(base.optim, lr=3e-4, warmup_steps=50),
        run=dataclasses.replace(base.run, out_dir="runs/stacking-fb", steps=6000, batch_size=32, threads=2,
                                sim_eval_every=1500, checkpoint_every=500),
    )


def _stacking_demos() -> TrainConfig:
    base = _stacking_fb()
    return dataclasses.replace(
        base, name="stacking-demos",
        model=dataclasses.replace(base.model, aux_outputs=0),
        data=dataclasses.replace(base.data, train=(), aux_extras="", image_shift=0, successful_only=True),
        optim=dataclasses.replace(base.optim, lr=1e-4, schedule="constant"),
        run=dataclasses.replace(base.run, out_dir="runs/stacking-demos", steps=1000, sim_eval_every=0),
    )


PRESETS = tuple(_presets())


def preset(name: str) -> TrainConfig:
    """A fresh copy of the named training preset."""
    presets = _presets()
    if name not in presets:
        raise ValueError(f"unknown training preset {name!r}; choose from {list(presets)}")
    return presets[name]


# ----------------------------------------------------------------------------------------------------------
# Overrides: "section.field=value" strings, typed by the dataclass annotations
# ----------------------------------------------------------------------------------------------------------
def apply_overrides(config: TrainConfig, overrides: Sequence[str]) -> TrainConfig:
    """A new config with ``section.field=value`` overrides applied (and re-validated); a field of one domain of the
    mixture: ``data.domains.<name>.<field>=value`` (after the domain exists: in the preset or an earlier override)."""
    d = config.to_dict()
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if sep and len(parts) == 4 and parts[:2] == ["data", "domains"] and all(parts):
            _override_domain(d["data"], parts[2], parts[3], raw.strip(), item)
            continue
        if not sep or len(parts) > 2 or not all(parts):
            raise ValueError(f"override {item!r}: expected section.field=value, e.g. optim.lr=3e-4")
        section_name = parts[0] if len(parts) == 2 else None
        if section_name is None:
            if parts[0] != "name":
                raise ValueError(f"override {item!r}: name a section, one of {list(_SECTIONS)} (e.g. run.{parts[0]})")
            d["name"] = raw
            continue
        if section_name not in _SECTIONS:
            raise ValueError(f"override {item!r}: unknown section {section_name!r}; choose from {list(_SECTIONS)}")
        cls = _SECTIONS[section_name]
        hints = typing.get_type_hints(cls)
        if parts[1] not in hints:
            raise ValueError(f"override {item!r}: {cls.__name__} has no field {parts[1]!r}; fields: {sorted(hints)}")
        d[section_name][parts[1]] = _parse(raw.strip(), hints[parts[1]], key)
    return TrainConfig.from_dict(d)


def _override_domain(data: dict[str, Any], name: str, field: str, raw: str, item: str) -> None:
    hints = typing.get_type_hints(DomainConfig)
    # an earlier override in this call may have left command-line strings (kind:paths@weight)
    domains = data["domains"] = [dataclasses.asdict(DomainConfig.parse(x)) if isinstance(x, str) else x
                                 for x in data["domains"]]
    match = [dom for dom in domains if dom["name"] == name]
    if not match:
        raise ValueError(f"override {item!r}: no domain named {name!r} in data.domains "
                         f"{[dom['name'] for dom in domains]}; set data.domains first")
    if field not in hints:
        raise ValueError(f"override {item!r}: DomainConfig has no field {field!r}; fields: {sorted(hints)}")
    match[0][field] = _parse(raw, hints[field], f"data.domains.{name}.{field}")


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return True, args[0] if len(args) == 1 else tp
    return False, tp


def _parse(raw: str, tp: Any, key: str) -> Any:
    """A command-line string as a value of annotation ``tp``."""
    optional, inner = _is_optional(tp)
    if optional and raw.lower() in ("none", "null", ""):
        return None
    origin = typing.get_origin(inner)
    try:
        if inner is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true/false")
        if inner is int:
            return int(raw.replace("_", ""))
        if inner is float:
            return float(raw)
        if origin is tuple:
            return tuple(s.strip() for s in raw.split(",") if s.strip())
        if origin is Literal:
            choices = typing.get_args(inner)
            if raw not in choices:
                raise ValueError(f"choose from {list(choices)}")
            return raw
        return raw
    except ValueError as e:
        raise ValueError(f"override {key}={raw!r}: {e}") from e


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """JSON values (lists for tuples) back to the annotated type."""
    if value is None:
        return None
    _, inner = _is_optional(tp)
    if typing.get_origin(inner) is tuple and isinstance(value, (list, tuple)):
        return tuple(value)
    if inner is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
