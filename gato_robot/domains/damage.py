"""Counting damaged inputs: each one is reported with its path and skipped, until a cap stops the run."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class DomainDataError(RuntimeError):
    """More damaged files than allowed, or nothing usable left. The message names the files and what to do."""


class DamageLog:
    def __init__(self, domain: str, max_damaged: int) -> None:
        self.domain, self.max_damaged = domain, max_damaged
        self.damaged: dict[str, str] = {}

    def report(self, path: str, why: str) -> None:
        if path not in self.damaged:
            log.warning("%s: skipping damaged or missing file %s: %s", self.domain, path, why)
            self.damaged[path] = why
        if len(self.damaged) > self.max_damaged:
            first = next(iter(self.damaged.items()))
            raise DomainDataError(
                f"{self.domain}: {len(self.damaged)} damaged or missing files (more than max_damaged="
                f"{self.max_damaged}); first: {first[0]}: {first[1]}. Repair or remove them, or raise max_damaged"
            )

    def __contains__(self, path: str) -> bool:
        return path in self.damaged
