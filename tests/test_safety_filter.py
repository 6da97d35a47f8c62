"""The controller's safety filter and the tokenizer's synchronisation, as pure code (no ROS)."""

from __future__ import annotations

import numpy as np
import pytest

from gato_robot.core.safety import Limits, Reason, SafetyFilter, State
from gato_robot.core.specs import rgb_stacking_spec
from gato_robot.core.sync import ApproximateSync, FutureStamp, Status

LOW, HIGH = rgb_stacking_spec(2).action_bounds()
STEP = (0.02, 0.02, 0.02, 0.3, 510.0)
STOP = (True, True, True, True, False)


def make_filter(armed: bool = True, watchdog: float = 0.1, max_age: float = 0.25) -> SafetyFilter:
    limits = Limits.within(LOW, HIGH, (0.07, 0.07, 0.07, 1.0, 255.0), STEP, STOP)
    return SafetyFilter(limits, watchdog_period=watchdog, max_action_age=max_age, armed=armed)


def inside(values: np.ndarray, f: SafetyFilter) -> bool:
    return bool(np.all(np.isfinite(values)) and np.all(values >= np.asarray(f.limits.low))
                and np.all(values <= np.asarray(f.limits.high)))


def test_non_finite_actions_never_become_commands():
    f = make_filter()
    rng = np.random.default_rng(0)
    bad = [np.nan, np.inf, -np.inf]
    commands = 0
    for i in range(1000):
        a = rng.uniform(LOW, HIGH)
        a[rng.integers(0, 5)] = bad[i % 3]
        d = f.filter_action(a, source_stamp=1.0 + 0.05 * i, now=1.0 + 0.05 * i)
        commands += d.command is not None
        assert d.reason is Reason.NON_FINITE
    assert commands == 0
    assert f.dropped[Reason.NON_FINITE] == 1000


def test_ten_times_out_of_range_is_clamped_and_rate_limited():
    f = make_filter()
    rng = np.random.default_rng(1)
    previous = np.zeros(5)
    for i in range(1000):
        a = rng.uniform(-10, 10, 5) * np.asarray(HIGH)
        c = f.filter_action(a, 1.0 + 0.05 * i, 1.0 + 0.05 * i).command
        assert c is not None and inside(c.values, f)
        assert np.all(np.abs(c.values - previous) <= np.asarray(STEP) + 1e-12)
        previous = c.values


def test_watchdog_stops_velocity_and_holds_the_gripper():
    f = make_filter()
    c = f.filter_action([0.07, 0, 0, 0, 200.0], 1.0, 1.0).command
    assert c.values[0] == pytest.approx(0.02) and c.values[4] == 200.0
    assert f.tick(1.05) is None  # fresh
    stop = f.tick(1.11)
    assert stop.reason is Reason.WATCHDOG and np.all(stop.values[:4] == 0) and stop.values[4] == 200.0
    assert f.trips == 1 and f.tripped
    f.tick(1.2)
    assert f.trips == 1  # one trip until an action resumes
    resumed = f.filter_action([0.07, 0, 0, 0, 200.0], 1.25, 1.25).command
    assert resumed.values[0] == pytest.approx(0.02) and not f.tripped  # ramps up from zero again


def test_hold_is_a_latch_that_drops_in_flight_actions():
    f = make_filter()
    f.filter_action([0.05, 0, 0, 0, 0], 1.0, 1.0)
    stop = f.hold(now=1.1)
    assert f.state is State.HELD and np.all(stop.values[:4] == 0)
    assert f.filter_action([0.05, 0, 0, 0, 0], 1.15, 1.15).reason is Reason.HELD
    assert f.tick(1.2).reason is Reason.HOLD
    assert f.rearm(now=1.3)
    # computed from an observation before the re-arm: in flight, dropped
    assert f.filter_action([0.05, 0, 0, 0, 0], 1.28, 1.31).reason is Reason.BEFORE_WATERMARK
    assert f.tick(1.32).reason is Reason.WATCHDOG  # still stopped until a fresh action
    assert f.filter_action([0.05, 0, 0, 0, 0], 1.35, 1.36).command is not None


def test_stale_duplicate_and_wrong_shape_actions_are_dropped():
    f = make_filter(max_age=0.25)
    assert f.filter_action([0.0] * 5, 1.0, 1.3).reason is Reason.TOO_OLD
    assert f.filter_action([0.0] * 5, 1.0, 1.0).command is not None
    assert f.filter_action([0.0] * 5, 1.0, 1.01).reason is Reason.OUT_OF_ORDER
    assert f.filter_action([0.0] * 4, 1.1, 1.1).reason is Reason.BAD_SHAPE


def test_starts_held_unless_armed():
    f = make_filter(armed=False)
    assert f.state is State.HELD and f.filter_action([0.0] * 5, 1.0, 1.0).reason is Reason.HELD


def test_limits_validate():
    with pytest.raises(ValueError, match="max_step"):
        Limits((-1.0,), (1.0,), (0.0,), (True,))
    with pytest.raises(ValueError, match="allow zero"):
        Limits((0.5,), (1.0,), (0.1,), (True,))


# -- synchronisation ---------------------------------------------------------------------------------------
def make_sync(**kw) -> ApproximateSync:
    return ApproximateSync(["a", "b", "j"], ["a", "b"], slop=kw.get("slop", 0.02), max_age=kw.get("max_age", 0.15),
                           min_interval=kw.get("min_interval", 0.045))


def test_sync_pairs_by_stamp_within_slop():
    s = make_sync()
    s.add("j", 0.995, "j0")
    s.add("j", 1.001, "j1")
    s.add("a", 1.0, "a")
    assert s.poll(1.01).status is Status.WAITING  # b not there yet
    s.add("b", 1.004, "b")
    out = s.poll(1.01)
    assert out.status is Status.SET and out.stamp == 1.004
    assert out.items == {"a": "a", "b": "b", "j": "j1"}
    assert s.poll(1.02).status is Status.NOTHING_NEW  # once per reference stamp


def test_sync_never_emits_a_skewed_set():
    s = make_sync()
    s.add("j", 1.0, 0)
    s.add("a", 1.0, 0)
    s.add("b", 1.05, 0)  # 50 ms from a: more than the slop
    assert s.poll(1.06).status is Status.WAITING
    s.add("a", 1.05, 1)
    assert s.poll(1.06).status is Status.WAITING  # joints are 50 ms off
    s.add("j", 1.049, 1)
    assert s.poll(1.06).status is Status.SET


def test_sync_stale_camera_stops_every_set():
    s = make_sync()
    emitted = 0
    for k in range(40):
        t = 1.0 + 0.05 * k
        s.add("a", t, k)
        if k < 10:  # camera b stops after 10 frames
            s.add("b", t, k)
        s.add("j", t, k)
        out = s.poll(t + 0.01)
        emitted += out.status is Status.SET
        if k >= 10 + 0.15 / 0.05:
            assert out.status is Status.STALE and "b is" in out.reason
    assert emitted == 10


def test_sync_caps_the_rate():
    s = make_sync(min_interval=0.045)
    emitted = []
    for k in range(30):  # 60 Hz sources, 20 Hz control
        t = 1.0 + k / 60
        for name in ("a", "b", "j"):
            s.add(name, t, k)
        out = s.poll(t)
        if out.status is Status.SET:
            emitted.append(out.stamp)
    assert np.all(np.diff(emitted) >= 0.045 - 1e-9) and len(emitted) >= 9


def test_sync_rejects_bad_input():
    with pytest.raises(ValueError):
        make_sync().add("a", float("nan"), 0)
    with pytest.raises(ValueError):
        make_sync().add("x", 1.0, 0)
    with pytest.raises(ValueError):
        ApproximateSync(["a"], ["b"], slop=0.1, max_age=1)


def test_watchdog_gives_the_first_action_one_period_from_the_first_tick():
    f = make_filter()
    assert f.tick(5.0) is None and f.tick(5.1) is None  # a policy still starting: not yet silent
    assert f.tick(5.11).reason is Reason.WATCHDOG and f.trips == 1  # silent for longer than the period
    f = make_filter()
    f.tick(5.0)
    assert f.filter_action([0.05, 0, 0, 0, 0], 5.05, 5.06).command is not None
    assert f.tick(5.15) is None and f.trips == 0


def test_at_rest_ramps_the_next_action_from_zero_and_keeps_the_gripper():
    f = make_filter()
    for i in range(5):
        c = f.filter_action([0.07, 0, 0, 0, 200.0], 1.0 + 0.05 * i, 1.0 + 0.05 * i).command
    assert c.values[0] == pytest.approx(0.07)
    f.at_rest()
    c = f.filter_action([-0.07, 0, 0, 0, 200.0], 1.3, 1.3).command
    assert c.values[0] == pytest.approx(-0.02) and c.values[4] == 200.0  # from zero, not from +0.07


# -- scenario 17: clock faults (pure code; the nodes' version is in test_ros_safety.py) -----------------------
def test_17_a_future_action_is_refused_and_never_blocks_later_ones():
    f = make_filter()
    t = 100.0
    assert f.filter_action([0.05, 0, 0, 0, 0], t, t).command is not None
    d = f.filter_action([0.05, 0, 0, 0, 0], t + 3600.0, t + 0.01)  # one action stamped an hour ahead
    assert d.command is None and d.reason is Reason.FUTURE
    accepted = sum(f.filter_action([0.05, 0, 0, 0, 0], t + 0.05 * k, t + 0.05 * k + 0.01).command is not None
                   for k in range(1, 133))
    assert accepted == 132  # before the fix: 0 of the next 132 (all "out of order" behind the future stamp)
    assert f.filter_action([0, 0, 0, 0, 0], t + 7 + f.max_future - 1e-6, t + 7).command is not None  # tolerance


def test_17_a_backwards_clock_jump_forgets_the_old_timeline():
    f = make_filter()
    for k in range(10):
        f.filter_action([0.05, 0, 0, 0, 0], 50.0 + 0.05 * k, 50.0 + 0.05 * k)
    # a simulation reset its /clock to 1 s: the watchdog stops the arm at once, the first fresh action is taken
    stop = f.tick(1.0)
    assert stop is not None and stop.reason is Reason.WATCHDOG and not np.any(stop.values[:4])
    assert f.clock_resets == 1
    assert f.filter_action([0.05, 0, 0, 0, 0], 1.0, 1.01).command is not None  # recovers within one period
    assert f.tick(1.05) is None  # and the watchdog runs on the new timeline


def test_17_a_clock_jump_keeps_a_hold():
    f = make_filter()
    f.filter_action([0.05, 0, 0, 0, 0], 50.0, 50.0)
    f.hold(50.1)
    f.tick(2.0)  # clock reset while held
    assert f.state is State.HELD and f.filter_action([0.05, 0, 0, 0, 0], 2.05, 2.06).reason is Reason.HELD
    f.rearm(2.1)
    assert f.filter_action([0.05, 0, 0, 0, 0], 2.15, 2.16).command is not None  # the re-arm works on new time


def test_17_sync_refuses_a_future_stamp_and_keeps_emitting():
    s = ApproximateSync(["a", "b", "j"], ["a", "b"], slop=0.02, max_age=0.15, min_interval=0.045, max_future=0.25)
    emitted = 0
    for k in range(40):
        t = 1.0 + 0.05 * k
        for name in ("a", "b", "j"):
            s.add(name, t, k, now=t + 0.005)
        if k == 10:  # one camera image stamped an hour ahead
            with pytest.raises(FutureStamp, match="ahead of the clock"):
                s.add("a", t + 3600.0, "bad", now=t + 0.005)
        emitted += s.poll(t + 0.005).status is Status.SET
    assert emitted == 40  # before the fix: 10 (the future stamp stayed the reference)


def test_17_sync_restarts_after_a_backwards_clock_jump():
    s = make_sync()
    for k in range(10):
        t = 50.0 + 0.05 * k
        for name in ("a", "b", "j"):
            s.add(name, t, k)
        s.poll(t)
    for name in ("a", "b", "j"):
        s.add(name, 1.0, "new", now=1.0)
    out = s.poll(1.001)
    assert s.clock_resets == 1 and out.status is Status.SET and out.items["a"] == "new"


def test_15_an_unguarded_action_becomes_a_stop_that_ramps_up_again():
    """The controller stops instead of an action its guard could not cover (a subscriber the guard has not matched):
    zero velocity, the gripper kept, the state unchanged, counted, and the next action ramps up from zero."""
    f = make_filter()
    t = 10.0
    for k in range(5):
        f.filter_action([0.07, 0, 0, 0, 200.0], t + 0.05 * k, t + 0.05 * k)
    moving = f.filter_action([0.07, 0, 0, 0, 200.0], t + 0.25, t + 0.25).command
    assert moving is not None and moving.values[0] > 0.05
    stop = f.stop(t + 0.25, Reason.UNGUARDED)
    assert stop.reason is Reason.UNGUARDED and not np.any(stop.values[:4]) and stop.values[4] == moving.values[4]
    assert f.state is State.ARMED and f.dropped[Reason.UNGUARDED] == 1
    nxt = f.filter_action([0.07, 0, 0, 0, 200.0], t + 0.3, t + 0.3).command
    assert nxt is not None and nxt.values[0] == pytest.approx(STEP[0])  # from zero, one step
