"""Approximate-time synchronisation of stamped streams (numpy-free, stdlib only).

``message_filters`` is not installable from PyPI (shared/reference/ros2.md), so the tokenizer node pairs its
inputs with this class. Times are seconds (floats) on one clock: header stamps of the sources, and ``now`` from
the node's clock (sim time in simulation). Synchronisation and staleness use header stamps, never arrival time.

The rule, applied every time a message arrives (:meth:`ApproximateSync.poll`):

1. the reference stamp is the newest stamp of the *reference* streams (the cameras);
2. a set is formed from, per stream, the buffered message whose stamp is closest to the reference;
3. a stream whose newest message is older than ``max_age`` (``now - stamp``) makes the set STALE: nothing is
   emitted, and this holds as long as that stream stays quiet (a stopped camera stops the policy);
4. a stream without a message within ``slop`` of the reference makes the set WAITING (its partner may still
   be in flight); it becomes a set when it arrives, or STALE once it is too old;
5. a complete set whose stamp spread exceeds ``slop`` is never formed (by 4), so skewed sets are never emitted;
6. a set is emitted once per reference stamp, and reference stamps at least ``min_interval`` apart (the cap at
   the control rate); older or equal reference stamps are NOTHING_NEW.

Clock faults. A message stamped more than ``max_future`` ahead of ``now`` is refused by :meth:`add`
(:class:`FutureStamp`, a ValueError for the caller's log line): buffered, it would be the reference stamp, never
stale, and every valid set after it would be NOTHING_NEW until the clock caught up with it. A ``now`` smaller than
one seen before (a simulation reset its /clock, a robot's clock was stepped) empties the buffers and forgets the
last emitted stamp (``clock_resets`` counts it): the new timeline's first complete set is emitted at once.
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
import math
from collections.abc import Sequence
from typing import Any


class Status(str, enum.Enum):
    SET = "set"  # a synchronised set is ready
    WAITING = "waiting"  # a stream has no message near the reference stamp yet (or none at all)
    STALE = "stale"  # a stream is older than max_age: rejected
    NOTHING_NEW = "nothing_new"  # no reference stamp newer than the last emitted one (or within min_interval)


@dataclasses.dataclass(frozen=True)
class SyncOutcome:
    status: Status
    stamp: float | None = None  # the reference stamp (the set's newest camera stamp)
    items: dict[str, Any] | None = None  # stream name -> value, for SET
    stamps: dict[str, float] | None = None  # stream name -> stamp of the chosen message, for SET
    reason: str = ""  # for WAITING / STALE: which stream and why, for a log line


class FutureStamp(ValueError):
    """A message stamped further ahead of the receiver's clock than the sync accepts."""


class ApproximateSync:
    """Pairs the newest reference stamp with the closest message of every other stream.

    ``streams``: all stream names; ``reference``: the subset whose newest stamp defines the set's stamp;
    ``slop``: the largest allowed distance of any chosen stamp from the reference (s); ``max_age``: the largest
    allowed ``now - stamp`` of any stream's newest message (s); ``min_interval``: the smallest distance between
    emitted reference stamps (s); ``depth``: messages kept per stream; ``max_future``: the largest allowed
    ``stamp - now`` of a message given to :meth:`add` with its ``now`` (s).
    """

    def __init__(self, streams: Sequence[str], reference: Sequence[str], *, slop: float, max_age: float,
                 min_interval: float = 0.0, depth: int = 32, max_future: float = math.inf) -> None:
        streams = list(streams)
        if len(set(streams)) != len(streams) or not streams:
            raise ValueError(f"streams must be distinct and non-empty, got {streams}")
        if not reference or not set(reference) <= set(streams):
            raise ValueError(f"reference streams {list(reference)} must be a non-empty subset of {streams}")
        for name, value in (("slop", slop), ("max_age", max_age), ("min_interval", min_interval)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0 (seconds), got {value}")
        if not max_future >= 0:
            raise ValueError(f"max_future must be >= 0 (seconds), got {max_future}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.streams, self.reference = tuple(streams), tuple(reference)
        self.slop, self.max_age, self.min_interval, self.depth = slop, max_age, min_interval, depth
        self._stamps: dict[str, list[float]] = {s: [] for s in streams}  # sorted ascending
        self._values: dict[str, list[Any]] = {s: [] for s in streams}
        self.max_future = max_future
        self.last_emitted: float | None = None
        self.clock: float | None = None  # the newest ``now`` seen
        self.clock_resets = 0

    def add(self, stream: str, stamp: float, value: Any, now: float | None = None) -> None:
        """Buffer one message. Non-finite stamps raise ValueError; with ``now`` (the receiver's clock), a stamp more
        than ``max_future`` ahead of it raises :class:`FutureStamp` and is not buffered. A stamp already buffered
        replaces its value."""
        if stream not in self._stamps:
            raise ValueError(f"unknown stream {stream!r}; expected one of {self.streams}")
        if not math.isfinite(stamp):
            raise ValueError(f"{stream}: stamp {stamp} is not finite")
        if now is not None:
            self._observe_clock(now)
            if stamp - now > self.max_future:
                raise FutureStamp(f"{stream}: stamp {stamp:.3f} is {stamp - now:.3f} s ahead of the clock "
                                  f"(limit {self.max_future:.3f} s)")
        stamps, values = self._stamps[stream], self._values[stream]
        i = bisect.bisect_left(stamps, stamp)
        if i < len(stamps) and stamps[i] == stamp:
            values[i] = value
            return
        stamps.insert(i, stamp)
        values.insert(i, value)
        if len(stamps) > self.depth:  # drop the oldest
            del stamps[0], values[0]

    def newest(self, stream: str) -> float | None:
        stamps = self._stamps[stream]
        return stamps[-1] if stamps else None

    def clear(self) -> None:
        for s in self.streams:
            self._stamps[s].clear()
            self._values[s].clear()

    def _observe_clock(self, now: float) -> None:
        if self.clock is not None and now < self.clock:  # the clock went back: a new timeline
            self.clear()
            self.last_emitted = None
            self.clock_resets += 1
        self.clock = now

    def poll(self, now: float) -> SyncOutcome:
        """Try to form a set at ``now`` (see the module docstring for the rule)."""
        self._observe_clock(now)
        empty = [s for s in self.streams if not self._stamps[s]]
        if empty:
            return SyncOutcome(Status.WAITING, reason=f"no message yet on {empty}")
        old = {s: now - self._stamps[s][-1] for s in self.streams if now - self._stamps[s][-1] > self.max_age}
        if old:
            worst = max(old, key=old.__getitem__)
            return SyncOutcome(Status.STALE, reason=(
                f"{worst} is {old[worst]:.3f} s old (limit {self.max_age:.3f} s)"
                + (f"; also stale: {sorted(set(old) - {worst})}" if len(old) > 1 else "")))
        ref = max(self._stamps[s][-1] for s in self.reference)
        if self.last_emitted is not None and ref < self.last_emitted + max(self.min_interval, 1e-9):
            return SyncOutcome(Status.NOTHING_NEW, stamp=ref)
        chosen: dict[str, int] = {}
        for s in self.streams:
            stamps = self._stamps[s]
            i = bisect.bisect_left(stamps, ref)
            best = min((j for j in (i - 1, i) if 0 <= j < len(stamps)), key=lambda j: abs(stamps[j] - ref))
            if abs(stamps[best] - ref) > self.slop:
                return SyncOutcome(Status.WAITING, stamp=ref, reason=(
                    f"{s}: nearest stamp is {stamps[best] - ref:+.3f} s from the reference (slop {self.slop:.3f} s)"))
            chosen[s] = best
        items = {s: self._values[s][j] for s, j in chosen.items()}
        stamps = {s: self._stamps[s][j] for s, j in chosen.items()}
        self.last_emitted = ref
        for s, j in chosen.items():  # what is older than the chosen message can never be chosen again
            del self._stamps[s][:j], self._values[s][:j]
        return SyncOutcome(Status.SET, stamp=ref, items=items, stamps=stamps)
