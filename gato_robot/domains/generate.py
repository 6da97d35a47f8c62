"""Write the built-in data of every domain (issue 8):

    python -m gato_robot.domains.generate all --out runs/domains            # the tiny-multidomain preset's data
    python -m gato_robot.domains.generate babyai --levels GoToRedBall GoToLocal --episodes 200 --out runs/domains
    python -m gato_robot.domains.generate metaworld --tasks reach-v3 push-v3 --episodes 50 --out runs/domains
    python -m gato_robot.domains.generate scenes --images 2000 --out runs/domains
    python -m gato_robot.domains.generate text --sources docs README.md --out runs/domains
    python -m gato_robot.domains.generate rgb_stacking --tasks rgb_test_triplet1 --episodes 4 --out runs/domains

Each domain goes to ``<out>/<domain>`` (``babyai``, ``metaworld``, ``rgb_stacking``: HDF5 episodes, one folder per
level/task; ``scenes``: COCO/VQA-style JSON + PNGs; ``text``: ``corpus.jsonl``). Deterministic given ``--seed``.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

DOMAINS = ("babyai", "metaworld", "scenes", "text", "rgb_stacking")


def text_corpus(out: str | Path, sources: Sequence[str | Path] = ()) -> Path:
    """A JSONL corpus (one paragraph per line, ``{"text": ...}``) from text files or folders (``.md``, ``.txt``,
    ``.rst``); without sources, from the docstrings of the installed ``gato_robot`` modules (always present)."""
    paragraphs: list[str] = []
    files: list[Path] = []
    for s in map(Path, sources):
        files += sorted(f for f in s.rglob("*") if f.suffix in (".md", ".txt", ".rst")) if s.is_dir() else [s]
    if files:
        for f in files:
            paragraphs += f.read_text(encoding="utf-8", errors="replace").split("\n\n")
    else:
        import gato_robot

        for f in sorted(Path(gato_robot.__file__).parent.rglob("*.py")):
            tree = ast.parse(f.read_text())
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(node):
                    paragraphs += ast.get_docstring(node).split("\n\n")  # type: ignore[union-attr]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "corpus.jsonl"
    with open(path, "w") as fh:
        for p in paragraphs:
            p = " ".join(p.split())
            if len(p) >= 40:
                fh.write(json.dumps({"text": p}) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("domain", choices=("all", *DOMAINS))
    p.add_argument("--out", default="runs/domains", help="root folder; each domain writes <out>/<domain>")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episodes", type=int, help="control episodes per level/task (default: babyai 1000, "
                   "metaworld 150 for the first task and 10 for the others, rgb_stacking 2)")
    p.add_argument("--levels", nargs="+", default=["GoToRedBall"], help="BabyAI levels")
    p.add_argument("--tasks", nargs="+", help="Meta-World tasks (default: MT10) or RGB-stacking triplets")
    p.add_argument("--images", type=int, default=2000, help="rendered scenes for captions/VQA")
    p.add_argument("--sources", nargs="*", default=[], help="text files/folders for the text corpus")
    args = p.parse_args(argv)
    out = Path(args.out)
    todo = ("babyai", "metaworld", "scenes", "text") if args.domain == "all" else (args.domain,)
    for name in todo:
        t0 = time.perf_counter()
        if name == "babyai":
            from gato_robot.domains import babyai

            babyai.generate(out / "babyai", args.levels, args.episodes or 1000, args.seed, progress=print)
        elif name == "metaworld":
            from gato_robot.domains import metaworld

            tasks = tuple(args.tasks or metaworld.MT10)
            if args.episodes:
                metaworld.generate(out / "metaworld", tasks, args.episodes, args.seed, progress=print)
            else:  # the target run's task gets most of the data, the rest of MT10 a little each
                metaworld.generate(out / "metaworld", tasks[:1], 150, args.seed, progress=print)
                metaworld.generate(out / "metaworld", tasks[1:], 10, args.seed + 1, progress=print)
        elif name == "scenes":
            from gato_robot.domains import vision

            vision.generate(out / "scenes", args.images, args.seed, progress=print)
        elif name == "text":
            print(f"text: {text_corpus(out / 'text', args.sources)}")
        else:
            from gato_robot.domains import rgb_stacking

            rgb_stacking.generate(out / "rgb_stacking", tuple(args.tasks or rgb_stacking.DEFAULT_TRIPLETS),
                                  args.episodes or 2, args.seed, progress=print)
        print(f"{name}: {time.perf_counter() - t0:.1f} s -> {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
