"""Command line: ``python -m tvutils merge --base BASE --finetuned A B --lambdas 1.0 -0.6 --out OUT``.

``python -m tvutils suggest …`` recommends the λ (``tvutils.suggest.cli``); ``python -m tvutils data fetch all``
fetches the chapters' data and models (``tvutils.chapter.data``).

Task arithmetic on safetensors checkpoints (single files or sharded Hugging Face folders) and PEFT LoRA
adapters, streamed: OUT = BASE + Σᵢ λᵢ (Aᵢ − BASE), an adapter's Aᵢ − BASE being s·B·A. What is validated,
what is atomic and what ``--overwrite`` replaces: the contract in ``tvutils.editing.streaming``'s docstring.
Errors are one line on stderr and exit status 2; SIGTERM and SIGHUP unwind like Ctrl-C (exit status 130),
removing the temporary output.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tvutils", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    merge = commands.add_parser(
        "merge",
        help="OUT = BASE + Σ λᵢ (Aᵢ − BASE) on safetensors checkpoints",
        description="Task arithmetic on safetensors checkpoints, one tensor at a time: OUT = BASE + Σ λᵢ (Aᵢ − BASE). "
        "A negative λ negates (forgets) a task. A PEFT LoRA adapter folder may stand for a fine-tuned Aᵢ "
        "(Aᵢ − BASE = s·B·A). Pickle checkpoints are refused.",
    )
    merge.add_argument("--base", required=True, help="pre-trained checkpoint: .safetensors file, folder, or index json")
    merge.add_argument(
        "--finetuned", required=True, nargs="+", metavar="A", help="fine-tuned checkpoints or LoRA adapter folders"
    )
    merge.add_argument(
        "--lambdas", required=True, nargs="+", type=_finite, metavar="λ", help="one finite λ per fine-tuned"
    )
    merge.add_argument("--out", required=True, help="output: a .safetensors file, or a folder (sharded base)")
    variant = merge.add_argument_group("task-vector variants (applied to each Aᵢ − BASE, in this order)")
    variant.add_argument("--rank", type=int, default=None, help="keep the best rank-k approximation of each matrix")
    variant.add_argument("--keep-rows", type=float, default=None, help="keep this fraction of rows of largest norm")
    variant.add_argument(
        "--keep-entries", type=float, default=None, help="keep this fraction of entries of largest magnitude"
    )
    merge.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16", "float64"],
        default=None,
        help="dtype of every float tensor of OUT (default: each tensor's own); the arithmetic is float32 either way",
    )
    merge.add_argument(
        "--allow-nonfinite", action="store_true", help="let NaN/Inf in the inputs or the result through (refused)"
    )
    merge.add_argument(
        "--overwrite",
        action="store_true",
        help="replace what the merge writes at OUT (a file, or the shards/index/configs in a folder; nothing else)",
    )
    merge.add_argument("--no-fsync", action="store_true", help="do not flush the output to disk before renaming it")
    merge.add_argument("--quiet", action="store_true", help="print nothing on success")
    from .suggest.cli import add_parser as add_suggest_parser

    add_suggest_parser(commands)  # commands.add_parser("suggest", ...)
    from .chapter.data import add_parser as add_data_parser

    add_data_parser(commands)  # commands.add_parser("data", ...)
    return parser


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


class Interrupted(BaseException):
    """Raised by SIGTERM / SIGHUP, so that a merge removes its temporary output on the way out."""


def _on_signal(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C (the temporary output is removed) instead of killing at once."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "suggest":
        from .suggest.cli import run as run_suggest

        return run_suggest(args)
    if args.command == "data":
        from .chapter.data import run as run_data

        return run_data(args)
    # numpy's BLAS threads, before numpy starts them: every core but the writer thread's (idle BLAS threads spin:
    # 7 % of perf's samples in a plain merge here, which does no BLAS; the variants' linear algebra is limited so).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(max(1, (os.cpu_count() or 1) - 1)))
    # Imported here so that --help and argument errors answer at once.
    from .editing.checkpoint import CheckpointError
    from .editing.streaming import PUBLISHED, merge_checkpoints

    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    start = time.perf_counter()
    if argv is None:  # the command line, not a call from Python
        install_signal_handlers()
    try:
        path = merge_checkpoints(
            args.base,
            args.finetuned,
            args.lambdas,
            args.out,
            rank=args.rank,
            keep_rows=args.keep_rows,
            keep_entries=args.keep_entries,
            overwrite=args.overwrite,
            log=log,
            fsync=not args.no_fsync,
            dtype=args.dtype,
            allow_nonfinite=args.allow_nonfinite,
        )
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a failure outside the merge's own handling: still one line
        print(f"error: {err.filename or ''}: {err.strerror or err}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Interrupted) as err:
        done = PUBLISHED in getattr(err, "__notes__", ())
        print(f"interrupted ({type(err).__name__}); {PUBLISHED if done else 'nothing written'}", file=sys.stderr)
        return 130
    if log is not None:
        log(f"merged {len(args.finetuned)} task vector(s) into {path} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
