"""The action safety filter between a policy and an arm (numpy only): what the controller node applies.

Order of checks for every action (shared/reference/safety.md: clamping passes NaN through, so finiteness
comes first):

1. shape, then finiteness: a non-finite action is dropped whole (never partly applied);
2. state: while HELD (hold / e-stop) every action is dropped; only :meth:`SafetyFilter.rearm` leaves HELD;
3. stamps: an action whose source stamp is more than ``max_future`` ahead of the caller's clock (a sensor or a
   peer with a wrong clock: it would otherwise become the newest accepted stamp and every valid action after it
   would look out of order), not newer than the last accepted one (duplicate, out of order), not newer than the
   hold/re-arm watermark (in flight before a hold or re-arm), or older than ``max_action_age`` is dropped;
4. clamp to the configured limits;
5. limit the change from the previous command per cycle (``max_step``);
6. the result is checked finite and inside the limits once more (an invariant: it cannot fail).

The watchdog (:meth:`SafetyFilter.tick`, called every control cycle): when no accepted action arrived within
``watchdog_period``, it commands a stop: velocity dimensions go to zero at once (not rate-limited), the other
dimensions (the gripper) hold their last value, so a grasped object is not dropped. A trip is not a latch: the
next fresh action resumes, ramping up from zero under the per-cycle limit. HOLD is a latch: stop, drop, and
wait for an explicit re-arm. Before the first action the period runs from the first tick (a policy gets one
watchdog period to answer, as between actions); after a re-arm the stop holds until a fresh action arrives.

Times are seconds on the caller's clock (the node's clock: sim time in simulation). When that clock goes
backwards (a simulation reset its /clock, a robot's clock was stepped), the stamps remembered from the old
timeline are forgotten (:attr:`SafetyFilter.clock_resets` counts it): the watchdog stops the arm at once and the
first fresh action of the new timeline is accepted; a hold stays a hold.

:meth:`SafetyFilter.stop` turns an accepted action into a stop when the caller may not move the arm right now (the
controller node: its dead man's switch cannot reach every subscriber of the arm topic yet): zero velocity, no
state change, the next action ramps up from zero again.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence

import numpy as np


class State(str, enum.Enum):
    ARMED = "armed"
    HELD = "held"


class Reason(str, enum.Enum):
    """Why a command was issued, or why an action was dropped (for logs and diagnostics)."""

    ACTION = "action"
    WATCHDOG = "watchdog"
    HOLD = "hold"
    BAD_SHAPE = "bad_shape"
    NON_FINITE = "non_finite"
    HELD = "held"
    BEFORE_WATERMARK = "in_flight_before_hold_or_rearm"
    OUT_OF_ORDER = "out_of_order"
    TOO_OLD = "too_old"
    FUTURE = "stamped_in_the_future"
    UNGUARDED = "unguarded"  # the caller could not guard the command (the controller's guard misses a subscriber)


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-dimension bounds of a command and of its change per control cycle.

    ``stop``: True for dimensions that go to zero on a stop (velocities); False for those that hold their last
    value (the gripper command).
    """

    low: tuple[float, ...]
    high: tuple[float, ...]
    max_step: tuple[float, ...]
    stop: tuple[bool, ...]

    def __post_init__(self) -> None:
        n = len(self.low)
        for name in ("high", "max_step", "stop"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"limits: {name} has {len(getattr(self, name))} values, low has {n}")
        low, high, step = (np.asarray(v, np.float64) for v in (self.low, self.high, self.max_step))
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(np.isfinite(step))):
            raise ValueError("limits must be finite numbers")
        if np.any(high < low):
            raise ValueError(f"limits: every high must be >= its low, got low={self.low} high={self.high}")
        if np.any(step <= 0):
            raise ValueError(f"limits: max_step must be > 0 per dimension, got {self.max_step}")
        for s, lo, hi in zip(self.stop, low, high):
            if s and not lo <= 0.0 <= hi:
                raise ValueError("limits: a dimension that stops at zero must allow zero (low <= 0 <= high)")

    @property
    def size(self) -> int:
        return len(self.low)

    @staticmethod
    def within(spec_low: Sequence[float], spec_high: Sequence[float], magnitude: Sequence[float],
               max_step: Sequence[float], stop: Sequence[bool]) -> Limits:
        """Symmetric limits ``+-magnitude`` intersected with the spec's action bounds."""
        low = np.maximum(np.asarray(spec_low, np.float64), -np.abs(np.asarray(magnitude, np.float64)))
        high = np.minimum(np.asarray(spec_high, np.float64), np.abs(np.asarray(magnitude, np.float64)))
        return Limits(tuple(low.tolist()), tuple(high.tolist()), tuple(float(s) for s in max_step),
                      tuple(bool(s) for s in stop))


# The controller's limit parameters (config/stack.yaml, gato_controller) and their defaults.
CONTROLLER_LIMITS = {"max_linear_velocity": 0.07, "max_yaw_rate": 1.0, "max_gripper": 255.0,
                     "max_linear_step": 0.02, "max_yaw_step": 0.3, "max_gripper_step": 510.0}


def controller_limits(spec_low: Sequence[float], spec_high: Sequence[float],
                      params: Mapping[str, float] | None = None) -> Limits:
    """The RGB-stacking controller's limits (vx, vy, vz, yaw rate, gripper) from its parameters (``params``: any
    of :data:`CONTROLLER_LIMITS`, the rest default), inside the spec's action bounds. Velocities stop at zero;
    the gripper holds. The controller node and anything that reproduces it (the direct benchmark's stack
    checks) build their filter from here."""
    p = {**CONTROLLER_LIMITS, **{k: float(v) for k, v in (params or {}).items() if k in CONTROLLER_LIMITS}}
    return Limits.within(spec_low, spec_high,
                         [p["max_linear_velocity"]] * 3 + [p["max_yaw_rate"], p["max_gripper"]],
                         [p["max_linear_step"]] * 3 + [p["max_yaw_step"], p["max_gripper_step"]],
                         [True] * 4 + [False])


# Stamps this far ahead of the receiver's clock are still accepted (s): a few control periods of clock skew or
# /clock delivery lag; an hour-ahead stamp is refused.
MAX_FUTURE_S = 0.25


@dataclasses.dataclass(frozen=True)
class Command:
    values: np.ndarray  # (A,) float64, finite, inside the limits
    stamp: float  # when it was issued (the caller's now)
    reason: Reason
    source_stamp: float | None = None  # the observation's stamp, for actions


@dataclasses.dataclass(frozen=True)
class Decision:
    command: Command | None  # None: the action was dropped
    reason: Reason


class SafetyFilter:
    """Turns untrusted actions into commands an arm may execute. See the module docstring for the rules."""

    def __init__(self, limits: Limits, *, watchdog_period: float, max_action_age: float,
                 armed: bool = False, max_future: float = MAX_FUTURE_S) -> None:
        if not watchdog_period > 0:
            raise ValueError(f"watchdog_period must be > 0 s, got {watchdog_period}")
        if not max_action_age > 0:
            raise ValueError(f"max_action_age must be > 0 s, got {max_action_age}")
        if not max_future >= 0:
            raise ValueError(f"max_future must be >= 0 s, got {max_future}")
        self.limits = limits
        self.watchdog_period, self.max_action_age = float(watchdog_period), float(max_action_age)
        self.max_future = float(max_future)
        self._low = np.asarray(limits.low, np.float64)
        self._high = np.asarray(limits.high, np.float64)
        self._step = np.asarray(limits.max_step, np.float64)
        self._stop = np.asarray(limits.stop, bool)
        self.state = State.ARMED if armed else State.HELD
        self.last = np.clip(np.zeros(limits.size), self._low, self._high)  # the last command issued
        self.last_action_time: float | None = None  # when the last accepted action arrived (caller's clock)
        self.first_tick: float | None = None  # the watchdog's reference until the first action
        self.last_source_stamp = -np.inf  # newest accepted source stamp
        self.watermark = -np.inf  # actions with source stamps <= this are dropped (set by hold and re-arm)
        self.tripped = False
        self.trips = 0
        self.dropped: dict[Reason, int] = {}
        self.held_since: float | None = None if armed else -np.inf
        self.clock: float | None = None  # the newest time the caller gave (a smaller one is a clock reset)
        self.clock_resets = 0

    # -- inputs ------------------------------------------------------------------------------------------
    def filter_action(self, action: np.ndarray | Sequence[float], source_stamp: float, now: float) -> Decision:
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (self.limits.size,):
            return self._drop(Reason.BAD_SHAPE)
        if not np.all(np.isfinite(a)) or not np.isfinite(source_stamp):
            return self._drop(Reason.NON_FINITE)
        self._observe_clock(now)
        if source_stamp - now > self.max_future:
            return self._drop(Reason.FUTURE)
        if self.state is State.HELD:
            return self._drop(Reason.HELD)
        if source_stamp <= self.watermark:
            return self._drop(Reason.BEFORE_WATERMARK)
        if source_stamp <= self.last_source_stamp:
            return self._drop(Reason.OUT_OF_ORDER)
        if now - source_stamp > self.max_action_age:
            return self._drop(Reason.TOO_OLD)
        target = np.clip(a, self._low, self._high)
        values = self.last + np.clip(target - self.last, -self._step, self._step)
        values = np.clip(values, self._low, self._high)
        assert np.all(np.isfinite(values)), "the filter produced a non-finite command"
        self.last = values
        self.last_source_stamp = source_stamp
        self.last_action_time = now
        self.tripped = False
        return Decision(Command(values.copy(), now, Reason.ACTION, source_stamp), Reason.ACTION)

    def tick(self, now: float) -> Command | None:
        """Once per control cycle: a stop command while HELD or when the watchdog has tripped, else None."""
        self._observe_clock(now)
        if self.state is State.HELD:
            return self._stop_command(now, Reason.HOLD)
        if self.first_tick is None:
            self.first_tick = now
        since = self.first_tick if self.last_action_time is None else self.last_action_time
        quiet = now - since > self.watchdog_period
        if quiet:
            if not self.tripped:
                self.tripped = True
                self.trips += 1
            return self._stop_command(now, Reason.WATCHDOG)
        return None

    def hold(self, now: float) -> Command:
        """Hold / e-stop: stop now, drop everything in flight, stay HELD until :meth:`rearm`."""
        if self.state is not State.HELD:
            self.held_since = now
        self.state = State.HELD
        self.watermark = max(self.watermark, now)
        return self._stop_command(now, Reason.HOLD)

    def rearm(self, now: float) -> bool:
        """Leave HELD. Only actions whose source stamp is newer than ``now`` are accepted afterwards (anything
        computed before the re-arm is in flight from before it). Returns whether the state changed."""
        changed = self.state is State.HELD
        self.state = State.ARMED
        self.held_since = None
        self.watermark = max(self.watermark, now)
        self.last_action_time = None  # the watchdog keeps commanding a stop until a fresh action arrives
        self.first_tick = -np.inf
        return changed

    def stop(self, now: float, reason: Reason) -> Command:
        """A one-off stop command for ``reason`` (counted in :attr:`dropped`): velocity to zero, the gripper held,
        the state unchanged; the next action ramps up from zero under the per-cycle limit."""
        self._observe_clock(now)
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        return self._stop_command(now, reason)

    def at_rest(self) -> None:
        """The arm is known to be at rest (a simulator reset it for a new episode): the next action ramps up from
        zero velocity, not from the last command of the previous episode. Limits and state are unchanged."""
        self.last = np.where(self._stop, 0.0, self.last)

    # -- helpers -----------------------------------------------------------------------------------------
    def _observe_clock(self, now: float) -> None:
        if self.clock is not None and now < self.clock:  # the clock went back: the old stamps mean nothing now
            self.clock_resets += 1
            self.last_source_stamp = -np.inf
            self.watermark = min(self.watermark, now)  # a hold stays HELD (state); its watermark was old time
            self.last_action_time = None  # stop at once (as after a re-arm) until a fresh action arrives
            self.first_tick = -np.inf
            if self.held_since is not None and np.isfinite(self.held_since):
                self.held_since = now
        self.clock = now

    def _stop_command(self, now: float, reason: Reason) -> Command:
        self.at_rest()
        return Command(self.last.copy(), now, reason)

    def _drop(self, reason: Reason) -> Decision:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        return Decision(None, reason)
