"""Command line: ``python -m tvutils merge --base BASE --finetuned A B --lambdas 1.0 -0.6 --out OUT``.

Task arithmetic on safetensors checkpoints (single files or sharded Hugging Face folders), streamed one tensor
at a time: OUT = BASE + Σᵢ λᵢ (Aᵢ − BASE). See ``tvutils.editing.streaming``.
"""

from __future__ import annotations

import argparse
import sys
import time


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tvutils", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    merge = commands.add_parser(
        "merge",
        help="OUT = BASE + Σ λᵢ (Aᵢ − BASE) on safetensors checkpoints",
        description="Task arithmetic on safetensors checkpoints, one tensor at a time: OUT = BASE + Σ λᵢ (Aᵢ − BASE). "
        "A negative λ negates (forgets) a task. Pickle checkpoints are refused.",
    )
    merge.add_argument("--base", required=True, help="pre-trained checkpoint: .safetensors file, folder, or index json")
    merge.add_argument("--finetuned", required=True, nargs="+", metavar="A", help="fine-tuned checkpoints A₁ A₂ …")
    merge.add_argument("--lambdas", required=True, nargs="+", type=float, metavar="λ", help="one λ per fine-tuned")
    merge.add_argument("--out", required=True, help="output: a .safetensors file, or a folder (sharded base)")
    variant = merge.add_argument_group("task-vector variants (applied to each Aᵢ − BASE, in this order)")
    variant.add_argument("--rank", type=int, default=None, help="keep the best rank-k approximation of each matrix")
    variant.add_argument("--keep-rows", type=float, default=None, help="keep this fraction of rows of largest norm")
    variant.add_argument(
        "--keep-entries", type=float, default=None, help="keep this fraction of entries of largest magnitude"
    )
    merge.add_argument("--overwrite", action="store_true", help="replace OUT if it exists (atomically)")
    merge.add_argument("--no-fsync", action="store_true", help="do not flush the output to disk before renaming it")
    merge.add_argument("--quiet", action="store_true", help="print nothing on success")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Imported here so that --help and argument errors answer at once (import torch costs about a second).
    from .editing.checkpoint import CheckpointError
    from .editing.streaming import merge_checkpoints

    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    start = time.perf_counter()
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
        )
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if log is not None:
        log(f"merged {len(args.finetuned)} task vector(s) into {path} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
