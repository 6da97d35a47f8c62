"""Robot description files: ``config/robots/<name>.yaml`` read by name or path into a core
:class:`~gato_robot.core.embodiment.Embodiment` (docs/robots.md).

Apart from core because it reads YAML (PyYAML, an install requirement): core needs only numpy and the standard
library. The simulator, the ROS nodes and the log tools load robots through :func:`load_embodiment`.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import yaml

from gato_robot.core.embodiment import DEFAULT_ROBOT, ROBOTS_FOLDER, Embodiment, embodiment_from_dict

__all__ = ["DEFAULT_ROBOT", "load_embodiment", "robots_folders"]


# -- loading --------------------------------------------------------------------------------------------------
def robots_folders() -> list[Path]:
    """Where robot files are looked up by name: this checkout's config/robots, then the installed
    share/gato_robot/config/robots under this Python's prefix and each AMENT_PREFIX_PATH entry."""
    folders = [Path(__file__).resolve().parents[1] / ROBOTS_FOLDER]
    prefixes = [sys.prefix, *os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)]
    folders += [Path(p) / "share" / "gato_robot" / ROBOTS_FOLDER for p in prefixes if p]
    return folders


@functools.cache
def _load_file(path: str) -> Embodiment:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise ValueError(f"cannot read robot file {path}: {e}") from e
    except yaml.YAMLError as e:
        raise ValueError(f"robot file {path} is not valid YAML: {e}") from e
    return embodiment_from_dict(data, path)


def load_embodiment(robot: str | os.PathLike = DEFAULT_ROBOT) -> Embodiment:
    """The robot named ``robot`` (``config/robots/<robot>.yaml``), or the robot file at that path."""
    text = os.fspath(robot)
    if text.endswith((".yaml", ".yml")) or os.sep in text or "/" in text:
        return _load_file(str(Path(text).resolve()))
    return _by_name(text)


@functools.cache  # adapters call this per command (ros.wire): look the file up once
def _by_name(text: str) -> Embodiment:
    for folder in robots_folders():
        path = folder / f"{text}.yaml"
        if path.is_file():
            return _load_file(str(path.resolve()))
    known = sorted({p.stem for f in robots_folders() if f.is_dir() for p in f.glob("*.yaml")})
    raise ValueError(f"no robot named {text!r}; known robots: {known} (or give the path of a robot file)")
