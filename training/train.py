"""Train a Gato policy: ``python training/train.py --preset tiny-cpu --data DIR [--set section.field=value ...]``.

Also ``torchrun --nproc_per_node N training/train.py ...`` (DDP, or FSDP for ``run.parallel=fsdp``) and
``python -m gato_robot.training.train``. See docs/training.md. Exit codes: 0 done, 2 bad configuration, 3 data
problem, 4 non-finite loss or gradient (the step was not applied), 5 checkpoint problem, 6 ONNX export
unavailable or failed (--export-only), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __name__ == "__main__":
    # `python training/train.py` puts training/ first on sys.path, where config.py, data.py... would shadow any
    # top-level module of those names imported by a dependency; the package is installed, import it from there.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]

from gato_robot.training.config import PRESETS, TrainConfig, apply_overrides, preset

EXIT_OK, EXIT_CONFIG, EXIT_DATA, EXIT_NONFINITE, EXIT_CHECKPOINT, EXIT_EXPORT, EXIT_INTERRUPTED = 0, 2, 3, 4, 5, 6, 130


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="tiny-cpu", help=f"training preset: {', '.join(PRESETS)}")
    p.add_argument("--config", help="a resolved config JSON (e.g. a run's train_config.json) instead of a preset")
    p.add_argument("--data", action="append", help="episode folder or file (repeatable): sets data.train; "
                   "DIR@3 draws DIR's timesteps 3x as often as those of a path without a weight")
    p.add_argument("--eval-data", action="append", help="held-out episodes (repeatable): sets data.eval")
    p.add_argument("--out", help="run folder (checkpoints, logs, config): sets run.out_dir")
    p.add_argument("--steps", type=int, help="sets run.steps")
    p.add_argument("--init-from", help="fine-tune from this model checkpoint folder, or an exported policy folder such as\n"
                                          "models/rgb_stacking_mini (its PyTorch weights, sha256-checked): sets model.init_from")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override any config field, e.g. --set optim.lr=3e-4 --set data.workers=8")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue from the newest valid checkpoint of the run folder (or the one given)")
    p.add_argument("--export-only", action="store_true", help="export the newest checkpoint to ONNX and exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    if args.config:
        import json

        cfg = TrainConfig.from_dict(json.loads(Path(args.config).read_text()))
    else:
        cfg = preset(args.preset)
    flat = []
    if args.data:
        flat.append("data.train=" + ",".join(args.data))
    if args.eval_data:
        flat.append("data.eval=" + ",".join(args.eval_data))
    if args.out:
        flat.append(f"run.out_dir={args.out}")
    if args.steps is not None:
        flat.append(f"run.steps={args.steps}")
    if args.init_from:
        flat.append(f"model.init_from={args.init_from}")
    return apply_overrides(cfg, flat + args.overrides)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("gato_robot.training")
    try:
        cfg = resolve_config(args)
    except (ValueError, OSError) as e:
        log.error("configuration: %s", e)
        return EXIT_CONFIG
    if args.print_config:
        print(cfg.to_json(), end="")
        return EXIT_OK

    # heavy imports only once the command line is known to be good
    from gato_robot.model.checkpoint import CheckpointError
    from gato_robot.training import distributed
    from gato_robot.training.data import DataError
    from gato_robot.training.hooks import ExportUnavailable
    from gato_robot.training.trainer import NonFiniteError, Trainer, export_latest

    if args.export_only:
        try:
            print(export_latest(cfg.run.out_dir))
        except ExportUnavailable as e:
            log.error("%s", e)
            return EXIT_EXPORT
        except CheckpointError as e:
            log.error("%s", e)
            return EXIT_CHECKPOINT
        except Exception as e:  # the exporter's own checks (finite weights, parity) or its failures
            log.error("ONNX export failed: %s: %s", type(e).__name__, e)
            return EXIT_EXPORT
        return EXIT_OK
    dist = None
    try:
        dist = distributed.init(cfg.run.device)
        if not dist.is_main:
            logging.getLogger().setLevel(logging.WARNING)
        trainer = Trainer(cfg, dist, resume=args.resume)
        summary = trainer.run()
        if dist.is_main:
            if trainer.bad_episodes:
                log.warning("report: %d bad episode files skipped: %s", len(trainer.bad_episodes),
                            ", ".join(trainer.bad_episodes))
            log.info("done: %s", summary)
        return EXIT_OK
    except NonFiniteError as e:
        log.error("stopped: %s", _message(e))
        return EXIT_NONFINITE
    except DataError as e:
        log.error("data: %s", _message(e))
        return EXIT_DATA
    except CheckpointError as e:
        log.error("checkpoint: %s", _message(e))
        return EXIT_CHECKPOINT
    except ValueError as e:
        log.error("configuration: %s", _message(e))
        return EXIT_CONFIG
    except KeyboardInterrupt:
        log.error("interrupted")
        return EXIT_INTERRUPTED
    finally:
        if dist is not None:
            distributed.shutdown()


def _message(e: BaseException) -> str:
    """The error's own message in one line: an error raised in a DataLoader worker arrives re-raised with the
    worker's traceback in its text; the user needs its last line (the original message), not the traceback."""
    text = str(e)
    if "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


if __name__ == "__main__":
    sys.exit(main())
