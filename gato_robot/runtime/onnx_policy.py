"""``OnnxPolicy``: the exported Gato policy on ONNX Runtime, for robot computers (numpy + onnxruntime, no torch).

Same protocol as ``gato_robot.model.policy.TorchPolicy``: ``state = policy.initial_state()``, then
``action, state = policy.step(observation, state)`` every control step (the step layout is
``gato_robot.core.stepping``).

Loading (``gato_robot.runtime.trust``, the one loader every entry point goes through; :func:`load_policy`):
before a session is created, the signature when a trusted public key is given (``trusted_key``), the sha256 of
every file and every manifest field are checked; once the session exists, the manifest is compared with the
graph (the fields bound into it at export, its inputs, outputs and cache shapes). A refused model raises
``ModelIntegrityError`` (a ValueError) naming the file or field. An observation that does not match the spec is
refused by the tokenizer (ValueError naming the key) before anything runs.

Providers: ``providers="auto"`` takes the CUDA execution provider when this onnxruntime build has it and a
session on it can be created, and the CPU provider otherwise; the choice, and why CUDA was not taken, is
logged (never a silent fallback). ``"cuda"`` insists (error if CUDA cannot be had); ``"cpu"`` never tries.

Execution: every run goes through IO binding. The KV cache lives on the session's device in two buffers used
in turn (the step reads ``past`` from one and writes ``present`` into the other), so it never crosses to the
host; the only per-step copies are the new tokens in and the action logits out (1024 floats). On CUDA,
``cuda_graph=True`` captures one CUDA graph per (chunk length, buffer parity) after warm-up and replays it
(fixed shapes and addresses, as ONNX Runtime requires); chunk lengths without a graph (e.g. a prompt) run
normally. A captured graph replays on the buffers it was captured with, so graphs run only on the policy's own
pair of cache buffers: with CUDA graphs, ``initial_state()`` of a policy without a prompt hands out that pair
(one live stream at a time, as the policy node runs it), and any other state (a clone, a prompted policy's
copy) runs without graphs, correctly. All step shapes are warmed up at construction.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from gato_robot.core import vocab
from gato_robot.core.manifest import ModelIntegrityError
from gato_robot.core.sequence import TokenBlock, collate, windows
from gato_robot.core.specs import RobotSpec
from gato_robot.core.stepping import action_token, observation_chunk, pending_token, softmax_sample
from gato_robot.core.tokenizer import Tokenizer
from gato_robot.runtime.contract import CONSUMED_ERROR, Sampling, read_recommendation
from gato_robot.runtime.trust import check_graph, open_model

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
TOKEN_INPUTS = ("tokens", "patches", "patch_row", "patch_col", "local_pos", "is_image")
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"

__all__ = ["ModelIntegrityError", "OnnxPolicy", "OnnxPolicyState", "load_policy"]


@dataclasses.dataclass
class OnnxPolicyState:
    """What the policy remembers between steps. ``step`` returns a new state that reuses this one's cache buffers
    and generator: a state is consumed by the step it is passed to (``consumed``; stepping it again raises,
    ``gato_robot.runtime.contract``); ``clone()`` it first to branch or replay."""

    buffers: list[list[ort.OrtValue]]  # two sets of per-layer cache tensors (k0, v0, k1, ...) on the device
    current: int = 0  # which buffer holds the cache now
    pos: int = 0  # tokens appended so far
    timestep: int = 0
    pending: TokenBlock | None = None  # the previous step's last action token
    action_tokens: np.ndarray | None = None  # (A,) ids chosen at the last step
    logits: np.ndarray | None = None  # (A, hi - lo) action logits of the last step
    rng: np.random.Generator | None = None
    consumed: bool = False  # set by the step it was passed to

    def successor(self) -> OnnxPolicyState:
        """The state a step works on: a new object sharing the buffers and generator; this one is consumed."""
        if self.consumed:
            raise ValueError(CONSUMED_ERROR)
        self.consumed = True
        return dataclasses.replace(self, consumed=False)

    def clone(self) -> OnnxPolicyState:
        shared = self.buffers[0] is self.buffers[1]  # a fused export: past and present are one buffer
        copies = [[_copy_ortvalue(t, empty=self.pos == 0) for t in buffer] for buffer in self.buffers[:2 - shared]]
        copies = copies * 2 if shared else copies
        rng = None
        if self.rng is not None:
            rng = np.random.Generator(type(self.rng.bit_generator)())
            rng.bit_generator.state = self.rng.bit_generator.state
        return dataclasses.replace(self, buffers=copies, rng=rng, consumed=False)


# cache dtype (manifest "cache.dtype") -> (onnxruntime element type, a numpy type with the same bytes)
_CACHE_TYPES: dict[str, tuple[Any, Any]] = {"float32": (np.float32, np.float32), "float16": (np.float16, np.float16),
                                            "bfloat16": (16, np.uint16)}  # 16: onnx.TensorProto.BFLOAT16


def _zeros(shape: tuple[int, ...], dtype: str, device: str, device_id: int) -> ort.OrtValue:
    element, same_bytes = _CACHE_TYPES[dtype]
    value = ort.OrtValue.ortvalue_from_shape_and_type(list(shape), element, device, device_id)
    value.update_inplace(np.zeros(shape, same_bytes))  # masked slots must hold numbers: 0 * NaN is NaN
    return value


def _copy_ortvalue(v: ort.OrtValue, empty: bool = False) -> ort.OrtValue:
    if v.data_type() == "tensor(bfloat16)":  # numpy has no bfloat16: no copy through the host
        if not empty:
            raise NotImplementedError("cloning a bfloat16 cache that holds tokens (a prompt, a branch) is not "
                                      "supported: onnxruntime's Python API copies through numpy, which has no "
                                      "bfloat16; export with --dtype fp16 for prompts and branching")
        return _zeros(tuple(v.shape()), "bfloat16", v.device_name().lower(), 0)
    if v.device_name().lower() == "cpu":
        return ort.OrtValue.ortvalue_from_numpy(v.numpy().copy())
    return ort.OrtValue.ortvalue_from_numpy(v.numpy(), v.device_name().lower(), 0)


class OnnxPolicy:
    def __init__(self, directory: str | os.PathLike, *, providers: str = "auto", tokenizer: Tokenizer | None = None,
                 temperature: float | None = 0.0, seed: int = 0, cuda_graph: bool = False, device_id: int = 0,
                 intra_op_threads: int = 0, warmup: bool = True,
                 prompt: TokenBlock | list[tuple[Mapping[str, Any], Any]] | None = None,
                 trusted_key: str | os.PathLike | None = None) -> None:
        if temperature is not None:  # checked before anything loads
            Sampling(temperature, seed)
        if providers not in ("auto", "cuda", "cpu"):
            raise ValueError(f"providers must be 'auto', 'cuda' or 'cpu', got {providers!r}")
        self.directory = Path(directory)
        self.trusted_key = Path(trusted_key) if trusted_key else None  # None: origin not checked
        self.manifest = open_model(self.directory, self.trusted_key)  # signature, sha256, fields: before any parse
        self.session, self.provider = _create_session(
            self.directory / ONNX_FILE, providers, device_id, cuda_graph, intra_op_threads)
        check_graph(self.manifest, self.session, self.directory)  # the fields bound at export, inputs, shapes
        self.spec = RobotSpec.from_dict(self.manifest["spec"])
        self.tokenizer = tokenizer if tokenizer is not None else Tokenizer.from_settings(
            self.spec, self.manifest.get("tokenizer"))
        self.recommended = read_recommendation(self.directory, self.manifest)  # None: the export has none
        if temperature is None:  # the model's recommendation, greedy without one
            temperature = 0.0 if self.recommended is None else self.recommended.temperature
        self.sampling = Sampling(temperature, seed)
        cache = self.manifest["cache"]
        self.cache_shape = (1, cache["heads"], cache["capacity"], cache["head_dim"])  # per layer, k or v
        self.cache_dtype = cache.get("dtype", "float32")
        self.shared_cache = bool(cache.get("shared_buffer", False))  # fused attention appends in place
        self.host_inputs = list(self.manifest.get("host_inputs", []))  # read by the fused op in host memory
        if self.cache_dtype not in _CACHE_TYPES or not set(self.host_inputs) <= {"total_sequence_length"}:
            raise ModelIntegrityError(f"{self.directory}: unknown cache dtype {self.cache_dtype!r} or host inputs "
                                      f"{self.host_inputs}")
        self.past_names = [n for n in self.manifest["inputs"] if n.startswith("past_")]
        self.present_names = [n for n in self.manifest["outputs"] if n.startswith("present_")]
        if len(self.past_names) != 2 * cache["layers"] or len(self.present_names) != len(self.past_names):
            raise ModelIntegrityError(f"{self.directory}: the manifest's cache inputs/outputs do not match its layers")
        self.context = int(self.manifest["model"]["context"])
        self.markov = bool(self.manifest["model"].get("markov", False))  # no history: every step starts afresh
        if self.markov and self.sampling.greedy:
            log.warning("%s is a Markov policy decoded greedily: with no history, the same image gives the same "
                        "action, and it can stall at a fixed point; sample its actions (temperature 1, as it was "
                        "evaluated)", self.directory)
        self.max_append = int(cache["max_append"])
        self.logits_lo, self.logits_hi = self.manifest["logits_range"]
        self.ranges = self.tokenizer.action_token_ranges()
        if [min(lo for lo, _ in self.ranges), max(hi for _, hi in self.ranges)] != [self.logits_lo, self.logits_hi]:
            raise ModelIntegrityError(f"{self.directory}: manifest field 'logits_range' {self.manifest['logits_range']} "
                                      "is not the spec's action token range")
        if self.spec.max_timestep_tokens + 1 > self.context:
            raise ValueError(f"a timestep of {self.spec.name!r} does not fit the model's context of {self.context}")
        self.device = "cuda" if self.provider == CUDA else "cpu"
        self.device_id = device_id if self.device == "cuda" else 0
        self.cuda_graph = cuda_graph and self.device == "cuda"
        self._graph_ids: dict[tuple[int, int], int] = {}
        self._inputs: dict[int, dict[str, ort.OrtValue]] = {}  # fixed input buffers per chunk length
        self._logits = ort.OrtValue.ortvalue_from_shape_and_type(
            [1, self.logits_hi - self.logits_lo], np.float32, self.device, self.device_id)
        self._total = ort.OrtValue.ortvalue_from_numpy(np.zeros((), np.int32))  # host memory, on any provider
        self._prompt = self._prompt_block(prompt)
        self._prompt_state: OnnxPolicyState | None = None
        log.info("OnnxPolicy %s on %s%s", self.directory, self.provider, " with CUDA graphs" if self.cuda_graph else "")
        # the cache pair CUDA graphs are captured on (module docstring)
        self._graph_buffers = self._empty_state().buffers if self.cuda_graph else None
        if warmup:
            self.warmup()

    @classmethod
    def from_directory(cls, directory: str | os.PathLike, **kw: Any) -> OnnxPolicy:
        return cls(directory, **kw)

    @property
    def temperature(self) -> float:
        return self.sampling.temperature

    @property
    def seed(self) -> int:
        return self.sampling.seed

    @seed.setter
    def seed(self, seed: int) -> None:  # the next initial_state() draws from it (an episode's seed)
        self.sampling = dataclasses.replace(self.sampling, seed=seed)

    # -- state -------------------------------------------------------------------------------------------
    def _empty_state(self) -> OnnxPolicyState:
        def zeros() -> ort.OrtValue:
            return _zeros(self.cache_shape, self.cache_dtype, self.device, self.device_id)

        first = [zeros() for _ in self.past_names]  # a shared cache: present is bound onto past (one buffer)
        return OnnxPolicyState(buffers=[first, first if self.shared_cache else [zeros() for _ in self.past_names]])

    def initial_state(self) -> OnnxPolicyState:
        if self.cuda_graph and self._prompt is None:  # the graphs' own buffers (module docstring): masked from 0
            return OnnxPolicyState(buffers=self._graph_buffers, rng=self.sampling.rng())
        if self._prompt_state is None:
            state = self._empty_state()
            if self._prompt is not None:
                for piece in windows(self._prompt, self.max_append):  # whole timesteps per append
                    self._append(piece, state)
            self._prompt_state = state
        state = self._prompt_state.clone()
        state.rng = self.sampling.rng()
        return state

    def warmup(self) -> None:
        """Run every chunk length a control step uses (first step, later steps, single tokens) once."""
        n_obs = self.spec.max_observation_tokens + 1
        obs_len = [n_obs, n_obs + 1] if not self.spec.has_text else []
        state = OnnxPolicyState(buffers=self._graph_buffers) if self.cuda_graph else self._empty_state()
        for n in [*obs_len, 1] * 2:  # twice: both buffer parities (and CUDA graph capture)
            block = TokenBlock.of_tokens(np.full(n, vocab.SEPARATOR), vocab.TokenKind.SEPARATOR)
            block.local_pos = np.arange(n, dtype=np.int64) % vocab.MAX_TOKENS_PER_TIMESTEP
            self._append(block, state)

    # -- acting ------------------------------------------------------------------------------------------
    def step(self, observation: Mapping[str, Any], state: OnnxPolicyState) -> tuple[np.ndarray, OnnxPolicyState]:
        """One control step: (flat float32 action in physical units, in spec token order; the next state)."""
        return self.step_tokens(self.tokenizer.tokenize_observation(observation), state)

    def step_tokens(self, observation: TokenBlock, state: OnnxPolicyState) -> tuple[np.ndarray, OnnxPolicyState]:
        """:meth:`step` for an observation tokenized elsewhere (``Tokenizer.tokenize_observation``: one timestep
        ending with the separator, e.g. from the ROS tokenizer node). The chosen ids are ``state.action_tokens``.
        ``state`` is consumed (the returned state reuses its buffers)."""
        logits, n_obs, state = self.observe(observation, state.successor())
        chosen, all_logits = [], []
        for j, (lo, hi) in enumerate(self.ranges):
            window = logits[lo - self.logits_lo : hi - self.logits_lo]
            all_logits.append(logits)
            chosen.append(lo + softmax_sample(window, self.sampling.temperature, state.rng))
            if j + 1 < len(self.ranges):
                logits = self.append_action(chosen[-1], j, n_obs, state)
        ids = np.asarray(chosen, np.int64)
        self.finish_step(ids, n_obs, state)
        state.action_tokens, state.logits = ids, np.stack(all_logits)
        return self.tokenizer.detokenize_action(ids), state

    # -- the pieces of a step (also driven token by token by ``gato_robot.runtime.ensemble``) ----------------
    def observe(self, observation: TokenBlock, state: OnnxPolicyState) -> tuple[np.ndarray, int, OnnxPolicyState]:
        """Append one timestep's observation (after the previous step's pending action token); return the logits
        of its last position, the observation's token count and the state to go on with (a Markov policy with a
        prompt starts from a fresh copy of the prompt's cache)."""
        if self.markov:  # only this timestep (and a prompt): start again from the initial cache
            if self._prompt is None:  # slots at positions >= pos are masked: no copy (CUDA graph buffers stay put)
                state.pos, state.pending = 0, None
            else:
                fresh = self._prompt_state.clone()
                fresh.rng, fresh.timestep = state.rng, state.timestep
                state = fresh
        chunk, n_obs = observation_chunk(observation, state.pending)
        return self._append(chunk, state), n_obs, state

    def append_action(self, token: int, index: int, n_obs: int, state: OnnxPolicyState) -> np.ndarray:
        """Append the step's ``index``-th chosen action token; return the logits for the next one."""
        return self._append(action_token(token, n_obs + index), state)

    def finish_step(self, ids: np.ndarray, n_obs: int, state: OnnxPolicyState) -> None:
        """After the step's action ids are chosen: the last one is appended at the next step."""
        state.pending = pending_token(ids, n_obs)
        state.timestep += 1

    # -- the session -------------------------------------------------------------------------------------
    def _append(self, block: TokenBlock, state: OnnxPolicyState) -> np.ndarray:
        """Append a block to the cache in ``state`` (updated in place); return the last position's logits."""
        n = len(block)
        if n > self.max_append:
            raise ValueError(f"cannot append {n} tokens at once; the exported model takes at most {self.max_append}")
        batch = collate([block]).as_dict()  # evaluation mode: rounded-mean patch positions
        inputs = self._input_buffers(n)
        for name in TOKEN_INPUTS:
            inputs[name].update_inplace(np.ascontiguousarray(batch[name]))
        inputs["pos"].update_inplace(np.asarray(state.pos, np.int64))
        src, dst = state.buffers[state.current], state.buffers[1 - state.current]
        binding = self.session.io_binding()
        for name in TOKEN_INPUTS:
            binding.bind_ortvalue_input(name, inputs[name])
        binding.bind_ortvalue_input("pos", inputs["pos"])
        if self.host_inputs:  # the fused op reads the total length (pos + n) on the host: no Memcpy node
            self._total.update_inplace(np.asarray(state.pos + n, np.int32))
            binding.bind_ortvalue_input("total_sequence_length", self._total)
        for name, value in zip(self.past_names, src):
            binding.bind_ortvalue_input(name, value)
        binding.bind_ortvalue_output("logits", self._logits)
        for name, value in zip(self.present_names, dst):
            binding.bind_ortvalue_output(name, value)
        run_options = ort.RunOptions()
        if self.cuda_graph and state.buffers is self._graph_buffers:  # a graph replays its capture's addresses
            key = (n, state.current)
            graph_id = self._graph_ids.setdefault(key, len(self._graph_ids) + 1)
            run_options.add_run_config_entry("gpu_graph_id", str(graph_id))
        self.session.run_with_iobinding(binding, run_options)
        state.current = 1 - state.current
        state.pos += n
        return self._logits.numpy()[0].copy()

    def _input_buffers(self, n: int) -> dict[str, ort.OrtValue]:
        if n not in self._inputs:
            shapes = {"tokens": ((1, n), np.int64), "patches": ((1, n, vocab.PATCH_PIXELS), np.float32),
                      "patch_row": ((1, n), np.int64), "patch_col": ((1, n), np.int64),
                      "local_pos": ((1, n), np.int64), "is_image": ((1, n), np.bool_), "pos": ((), np.int64)}
            self._inputs[n] = {
                name: ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, dtype), self.device, self.device_id)
                for name, (shape, dtype) in shapes.items()
            }
        return self._inputs[n]

    def _prompt_block(self, prompt: TokenBlock | list[tuple[Mapping[str, Any], Any]] | None) -> TokenBlock | None:
        if prompt is None or isinstance(prompt, TokenBlock):
            return prompt if prompt is None or len(prompt) else None
        from gato_robot.core.sequence import build_episode

        pairs = list(prompt)
        return build_episode(self.tokenizer, [o for o, _ in pairs], [a for _, a in pairs]) if pairs else None


def _create_session(path: Path, providers: str, device_id: int, cuda_graph: bool,
                    intra_op_threads: int) -> tuple[ort.InferenceSession, str]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    available = ort.get_available_providers()
    if providers in ("auto", "cuda"):
        reason = None
        if CUDA not in available:
            reason = f"this onnxruntime build has no CUDA provider (it has {available}); install onnxruntime-gpu"
        else:
            cuda_options = {"device_id": str(device_id), "enable_cuda_graph": "1" if cuda_graph else "0"}
            try:
                session = ort.InferenceSession(str(path), options, providers=[(CUDA, cuda_options), CPU])
                if session.get_providers()[0] == CUDA:
                    return session, CUDA
                reason = "the CUDA provider failed to load (no GPU or CUDA libraries); onnxruntime fell back"
            except Exception as e:  # a broken CUDA install must degrade to CPU, loudly, never crash the robot
                reason = f"creating a CUDA session failed: {type(e).__name__}: {e}"
        if providers == "cuda":
            raise RuntimeError(f"CUDA execution was required but is unavailable: {reason}")
        log.warning("OnnxPolicy falls back to the CPU provider: %s", reason)
    try:
        return ort.InferenceSession(str(path), options, providers=[CPU]), CPU
    except Exception as e:  # onnxruntime's errors (InvalidGraph, Fail, ...) derive from Exception only
        raise ModelIntegrityError(f"{path}: ONNX Runtime cannot load the graph: {type(e).__name__}: {e}") from e


def load_policy(directory: str | os.PathLike, *, trusted_key: str | os.PathLike | None = None,
                **kw: Any) -> OnnxPolicy:
    """The exported policy in ``directory``, refused (ModelIntegrityError, a ValueError naming the file or field)
    unless its files, manifest and graph agree and, when ``trusted_key`` (a PEM public key) is given, it is
    signed by the matching private key. Any other failure of a hand-edited manifest is reported the same way,
    never as a bare TypeError. Other keywords go to :class:`OnnxPolicy`. The policy node, the benchmark and the
    demo load through here."""
    try:
        return OnnxPolicy(directory, trusted_key=trusted_key, **kw)
    except (ModelIntegrityError, RuntimeError):  # RuntimeError: providers="cuda" without CUDA
        raise
    except (TypeError, KeyError, AttributeError, IndexError) as e:  # a field check missed this: still refuse clearly
        raise ModelIntegrityError(f"{directory}: refused: {type(e).__name__}: {e}") from e
