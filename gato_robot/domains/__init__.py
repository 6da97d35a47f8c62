"""Gato's data domains beyond one robot: control episodes from BabyAI, Meta-World and RGB stacking, text
corpora, image captions and visual question answering (issue 8). See docs/domains.md.

One module per domain: its spec, the reader the trainer mixes, a generator that writes data here (control:
the project's HDF5 episodes; captions/VQA: COCO/VQA-style JSON + PNG images) and, where there is an
environment, the evaluation rollout. Heavy dependencies (minigrid, metaworld, pybullet) are imported lazily.
"""

from __future__ import annotations

CONTROL_KINDS = ("babyai", "metaworld", "rgb_stacking", "episodes")  # HDF5 episode folders
KINDS = (*CONTROL_KINDS, "text", "caption", "vqa")
ROLLOUT_KINDS = ("babyai", "metaworld", "rgb_stacking")  # domains with an environment to evaluate in
