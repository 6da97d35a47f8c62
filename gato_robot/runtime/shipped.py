"""The trained policy this repository ships (``models/``), found in a checkout or in a ROS 2 install.

``models/rgb_stacking_mini`` is the project's best small RGB-stacking policy so far (its README is the model card:
data, commands, compute, results). It is the default policy of ``gato-demo``. It was trained as a Markov policy
whose actions are sampled at ``temperature`` :data:`SHIPPED_TEMPERATURE` (greedy decoding stalls it): its
``sampling.json`` (listed and hashed by its manifest, ``gato_robot.runtime.contract``) carries that figure to every
entry point; ``tests/test_policy_contract.py`` checks the two agree.
Standard library only: no torch, no onnxruntime.
"""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = "gato_robot"
SHIPPED_MODEL = "rgb_stacking_mini"
SHIPPED_TEMPERATURE = 1.0  # the temperature it was evaluated at (docs/stacking.md)


def shipped_model_dir(name: str = SHIPPED_MODEL) -> Path | None:
    """The directory of a shipped model (``model.onnx`` + ``manifest.json``), or None when this install lacks it.

    Looks in this checkout's ``models/`` (an editable install or running from source), then in the package's
    share directory of a ROS 2 / pip install (``share/gato_robot/models``)."""
    candidates = [Path(__file__).resolve().parents[2] / "models" / name,
                  Path(sys.prefix) / "share" / PACKAGE / "models" / name]
    for c in candidates:
        if (c / "manifest.json").is_file() and (c / "model.onnx").is_file():
            return c
    share = _ament_share_dir()
    c = share / "models" / name if share is not None else None
    return c if c is not None and (c / "manifest.json").is_file() and (c / "model.onnx").is_file() else None


def _ament_share_dir() -> Path | None:
    """share/gato_robot of a colcon / ROS 2 install, or None (no ament index, not sourced, not installed)."""
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except (ImportError, LookupError, OSError, ValueError):  # PackageNotFoundError is a KeyError
        return None
