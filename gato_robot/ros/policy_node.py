"""Policy node (lifecycle): tokenized observations -> action tokens, with the history kept across steps.

- configure: load the exported ONNX policy through ``gato_robot.runtime.onnx_policy.load_policy`` (signature
  when ``trusted_public_key`` is set, sha256 manifest and every field before a session exists, the graph
  against the manifest after) and warm it up; a refused model leaves the node unconfigured with one error
  line saying why (:func:`load_or_refuse`).
- activate: start stepping on /gato/observation; deactivate: stop (the controller's watchdog then stops the arm).
- the history (KV cache) resets on /gato/policy/reset (std_srvs/Trigger), at an episode boundary
  (/gato/episode_status's ``episode`` changes) and when observation stamps go backwards or jump by more than
  ``max_gap_s`` (a new stream).
- publishes /gato/action_tokens (32SC1 1 x A, stamp = the observation's) and /diagnostics (ONNX step latency
  p50/p99, decode + publish time around it p50/p99, provider, steps, resets).

``autostart`` (default true) configures and activates at start, as a lifecycle manager would.
"""

from __future__ import annotations

import collections
import sys
import time
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from gato_robot import wire
from gato_robot.ros import common
from gato_robot.ros.stack import MODEL_TEMPERATURE


def load_or_refuse(logger: Any, model_dir: str, trusted_key: str = "", **kw: Any) -> Any:
    """The policy in ``model_dir`` (``load_policy``), or None after exactly one error line on ``logger`` saying
    why it was refused: whatever a damaged, edited, unsigned or untrusted model raises."""
    if not model_dir:
        logger.error("no model: set the parameter model_dir (launch argument model:=DIR)")
        return None
    try:
        from gato_robot.runtime.onnx_policy import load_policy  # lazily: onnxruntime loads only here

        return load_policy(model_dir, trusted_key=trusted_key or None, **kw)
    except Exception as e:  # a refused model is named in the log, never a silent failure (issue 28)
        logger.error(f"refused to load the policy from {model_dir}: {type(e).__name__}: {e}")
        return None


class PolicyNode(LifecycleNode):
    def __init__(self) -> None:
        super().__init__("gato_policy")
        d = lambda *a: common.declare(self, *a)  # noqa: E731
        self.model_dir = d("model_dir", "", "exported ONNX policy directory (model.onnx + manifest.json)")
        self.trusted_key = str(d("trusted_public_key", "", "PEM public key: refuse a model not signed by its "
                                 "private key (model.sig; empty: the origin is not checked)"))
        self.providers = d("providers", "auto", "ONNX Runtime providers: auto | cpu | cuda")
        self.threads = int(d("intra_op_threads", 0, "ONNX Runtime intra-op threads (0: its default)"))
        temperature = float(d("temperature", MODEL_TEMPERATURE, "sampling temperature: -1 the model's recommendation "
                              "(its sampling.json; greedy without one), 0 greedy, > 0 sampled"))
        # None: the policy takes its manifest's recommendation; any other value is checked by the policy contract
        self.temperature = None if temperature == MODEL_TEMPERATURE else temperature
        self.seed = int(d("seed", 0, "sampling seed (temperature > 0)"))
        self.seed_from_episode = bool(d("seed_from_episode", False, "reseed the sampler with each episode's seed "
                                        "from /gato/episode_status (the direct benchmark's draws)"))
        self.max_gap = float(d("max_gap_s", 1.0, "reset the history when observation stamps jump by more (s)"))
        autostart = bool(d("autostart", True, "configure and activate at start"))
        self.policy = None
        self.state = None
        self.active = False
        self.last_stamp: float | None = None
        self.episodes = common.EpisodeWatch(self)
        self.steps = self.resets = self.errors = 0
        self.latency_ms: collections.deque[float] = collections.deque(maxlen=1000)  # ONNX step
        self.io_ms: collections.deque[float] = collections.deque(maxlen=1000)  # decode observation + publish tokens
        self.pub = None
        self.obs_sub = None
        self.create_service(Trigger, common.POLICY_RESET_SERVICE, self.on_reset)
        self.create_subscription(String, common.EPISODE_STATUS_TOPIC, self.on_episode_status, common.COMMAND_QOS)
        self.diag = self.create_publisher(DiagnosticArray, "/diagnostics", common.COMMAND_QOS)
        self.create_timer(1.0, self.publish_diagnostics)
        if autostart:
            self.trigger_configure()
            if self.policy is not None:
                self.trigger_activate()

    # -- lifecycle ---------------------------------------------------------------------------------------
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        t0 = time.perf_counter()
        self.policy = load_or_refuse(self.get_logger(), self.model_dir, self.trusted_key, providers=self.providers,
                                     intra_op_threads=self.threads, temperature=self.temperature, seed=self.seed,
                                     warmup=True)
        if self.policy is None:
            return TransitionCallbackReturn.FAILURE
        self.state = self.policy.initial_state()
        self.pub = self.create_lifecycle_publisher(Image, common.ACTION_TOKENS_TOPIC, common.PIPELINE_PUB_QOS)
        self.obs_sub = self.create_subscription(Image, common.OBSERVATION_TOPIC, self.on_observation,
                                                common.PIPELINE_QOS)
        self.get_logger().info(
            f"loaded {self.model_dir} (manifest verified, "
            f"{f'signature verified with {self.trusted_key}' if self.trusted_key else 'origin not checked'}, "
            f"spec {self.policy.spec.name}) on {self.policy.provider}, {self._sampling_text()}, "
            f"warmed up in {time.perf_counter() - t0:.2f} s")
        return TransitionCallbackReturn.SUCCESS

    def _sampling_text(self) -> str:
        t = self.policy.temperature
        how = "greedy" if t == 0 else f"sampled at temperature {t:g}"
        if self.temperature is not None:
            return f"{how} (parameter temperature)"
        return f"{how} ({'the model recommends it' if self.policy.recommended else 'the model recommends nothing'})"

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self.active = True
        self.get_logger().info(f"active: stepping on {common.OBSERVATION_TOPIC} -> {common.ACTION_TOKENS_TOPIC}")
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self.active = False
        self.get_logger().info("inactive: no actions are published (the controller's watchdog stops the arm)")
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self.active = False
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        if self.obs_sub is not None:
            self.destroy_subscription(self.obs_sub)
            self.obs_sub = None
        if self.pub is not None:
            self.destroy_lifecycle_publisher(self.pub)
            self.pub = None
        self.policy = self.state = None

    # -- stepping ----------------------------------------------------------------------------------------
    def reset_history(self, why: str) -> None:
        if self.policy is not None:
            self.state = self.policy.initial_state()
        self.last_stamp = None
        self.resets += 1
        self.get_logger().info(f"history cleared: {why}")

    def on_observation(self, msg: Image) -> None:
        if not self.active or self.policy is None:
            return
        stamp = common.stamp_to_sec(msg.header.stamp)
        if msg.header.frame_id != self.policy.spec.name:
            self.errors += 1
            self.get_logger().error(f"observation for spec {msg.header.frame_id!r}, the model expects "
                                    f"{self.policy.spec.name!r}: not stepped", throttle_duration_sec=2.0)
            return
        if self.last_stamp is not None and stamp <= self.last_stamp:
            if stamp < self.last_stamp:
                self.reset_history(f"observation stamps went back by {self.last_stamp - stamp:.3f} s")
            else:
                return  # the same observation again
        elif self.last_stamp is not None and stamp - self.last_stamp > self.max_gap:
            self.reset_history(f"observations resumed after {stamp - self.last_stamp:.3f} s")
        t0 = time.perf_counter()
        try:
            block = wire.decode_observation_rows(common.observation_rows(msg))
            if len(block) != self.policy.spec.max_observation_tokens + 1:
                raise ValueError(f"{len(block)} tokens, the spec's observation has "
                                 f"{self.policy.spec.max_observation_tokens + 1}")
            t1 = time.perf_counter()
            _, self.state = self.policy.step_tokens(block, self.state)
        except ValueError as e:
            self.errors += 1
            self.get_logger().error(f"observation rejected, not stepped: {e}", throttle_duration_sec=1.0)
            return
        t2 = time.perf_counter()
        ids = self.state.action_tokens.astype(np.int32).reshape(1, -1)
        self.pub.publish(common.array_image(ids, wire.ACTION_TOKENS_ENCODING, msg.header.stamp, msg.header.frame_id))
        self.latency_ms.append((t2 - t1) * 1e3)  # the ONNX step alone
        self.io_ms.append(((t1 - t0) + (time.perf_counter() - t2)) * 1e3)  # decode + publish around it
        self.last_stamp = stamp
        self.steps += 1

    def on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.reset_history("reset requested")
        response.success, response.message = True, f"history cleared (reset #{self.resets})"
        return response

    def on_episode_status(self, msg: String) -> None:
        status = self.episodes.update(msg)
        if status is None:
            return
        seed = status.get("seed")
        if self.seed_from_episode and isinstance(seed, int) and self.policy is not None:
            self.policy.seed = seed  # the next initial_state() draws from the episode's seed
        if not self.episodes.first:
            self.reset_history(f"episode {self.episodes.previous} -> {self.episodes.episode}")
        elif self.seed_from_episode and self.state is not None and self.state.timestep == 0:
            self.state = self.policy.initial_state()  # the first episode, nothing stepped yet: draw from its seed

    def publish_diagnostics(self) -> None:
        status = DiagnosticStatus(name="gato_policy", hardware_id=str(self.model_dir))
        lat = np.asarray(self.latency_ms) if self.latency_ms else np.zeros(1)
        io = np.asarray(self.io_ms) if self.io_ms else np.zeros(1)
        status.level = DiagnosticStatus.OK if self.active else DiagnosticStatus.WARN
        status.message = "active" if self.active else ("configured" if self.policy is not None else "unconfigured")
        status.values = [
            KeyValue(key="provider", value=self.policy.provider if self.policy is not None else ""),
            KeyValue(key="step_latency_p50_ms", value=f"{np.percentile(lat, 50):.3f}"),
            KeyValue(key="step_latency_p99_ms", value=f"{np.percentile(lat, 99):.3f}"),
            KeyValue(key="decode_publish_p50_ms", value=f"{np.percentile(io, 50):.3f}"),
            KeyValue(key="decode_publish_p99_ms", value=f"{np.percentile(io, 99):.3f}"),
            KeyValue(key="steps", value=str(self.steps)),
            KeyValue(key="resets", value=str(self.resets)),
            KeyValue(key="errors", value=str(self.errors)),
        ]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag.publish(msg)


def main(args: list[str] | None = None) -> int:
    return common.run(PolicyNode, args)


if __name__ == "__main__":
    sys.exit(main())
