"""``python -m tvutils suggest``: a recommended λ for safetensors checkpoints, from a probe, and the merge command.

    python -m tvutils suggest --base B --finetuned A1 A2 --goal add|forget|target --probe PROBE.safetensors
                              [--target-labels LABELS.safetensors] [--forget I] [--out OUT]

The probe file's format is in ``tvutils.suggest.models``. Errors are one line on stderr and exit status 2:
checkpoints that do not match or cannot be read, a probe of the wrong shape or too small for a stable estimate
(with how many examples would do), a goal that needs labels given none.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from . import GOALS

MAX_HALFWIDTH = 0.15  # an estimate whose 95 % interval is wider than ±this is refused (our choice)


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``suggest`` subcommand's arguments."""
    p = commands.add_parser(
        "suggest",
        help="recommend λ from the theorems, measuring α̂/γ̂ on a probe",
        description="Recommend task-arithmetic coefficients λ for BASE + Σ λᵢ (Aᵢ − BASE): estimate the task "
        "relations α̂ (or γ̂) in output space on a probe file, apply the theorems' rule for the goal, and print the "
        "merge command. The probe format: python -c 'import tvutils.suggest.models as m; help(m)'.",
    )
    p.add_argument("--base", required=True, help="pre-trained checkpoint (with config.json beside it)")
    p.add_argument("--finetuned", required=True, nargs="+", metavar="A", help="fine-tuned checkpoints A₁ A₂ …")
    p.add_argument(
        "--goal", required=True, choices=GOALS, help="add: learn all; forget: forget one; target: a new task"
    )
    p.add_argument("--probe", required=True, help=".safetensors with pixel_values or input_ids, and task")
    p.add_argument("--target-labels", default=None, help=".safetensors with labels of the probe's target rows")
    p.add_argument("--forget", type=int, default=None, metavar="I", help="which A to forget (1-based; default last)")
    p.add_argument("--out", default="merged.safetensors", help="the output path written into the merge command")
    p.add_argument("--max-halfwidth", type=float, default=MAX_HALFWIDTH, help="widest interval accepted (±)")
    return p


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Run ``suggest``; returns the exit status."""
    k = len(args.finetuned)
    if args.goal == "target" and args.target_labels is None:
        return _fail("--goal target needs --target-labels: γ̂ is measured on labelled examples of the target")
    if args.goal != "target" and args.target_labels is not None:
        return _fail(f"--target-labels is only read with --goal target, not {args.goal}")
    if args.goal in ("add", "forget") and k < 2:
        return _fail(f"--goal {args.goal} needs at least two --finetuned checkpoints, got {k}")
    if args.forget is not None and (args.goal != "forget" or not 1 <= args.forget <= k):
        return _fail(f"--forget takes 1 … {k} with --goal forget")
    from .estimate import ProbeError, examples_needed  # torch: imported once the arguments are good
    from .models import Checkpoint, CheckpointError, ProbeFileError, Runner, check_same_layout, load_probe

    try:
        base = Checkpoint(args.base)
        tuned = [Checkpoint(a) for a in args.finetuned]
        check_same_layout(base, tuned)
        probe = load_probe(args.probe, args.target_labels)
        runner = Runner(base)
        runner.check(probe)
        suggestion = _suggest(args, runner, base, tuned, probe)
    except (CheckpointError, ProbeFileError, ProbeError) as err:
        return _fail(str(err))
    except OSError as err:
        return _fail(f"{err.filename or ''}: {err.strerror or err}")
    wide = {name: e for name, e in suggestion.estimates.items() if e.halfwidth > args.max_halfwidth}
    if wide:
        name, e = max(wide.items(), key=lambda kv: kv[1].halfwidth)
        groups = 2 if name.startswith("α̂") else 1
        return _fail(
            f"probe too small for a stable estimate: {name} = {e.value:+.3f} ± {e.halfwidth:.3f} from {e.n} examples"
            f" ({e.n // groups} per task); "
            f"about {examples_needed(e, args.max_halfwidth) // groups} examples per task are needed for "
            f"± {args.max_halfwidth:g}"
        )
    _report(args, suggestion)
    return 0


def _suggest(args, runner, base, tuned, probe):  # noqa: ANN001, ANN202 (the CLI's plumbing)
    import numpy as np

    from .api import suggest
    from .estimate import ProbeError
    from .rules import Constants

    task = probe.task.numpy()
    k = len(tuned)
    needed = range(k) if args.goal != "target" else range(-1, k)
    missing = [i for i in needed if not (task == i).any()]
    if missing:
        what = ", ".join("the target" if i < 0 else f"A{i + 1}" for i in missing)
        raise ProbeError(f"probe: no example of {what} (column 'task')")
    runner.load(base)
    ref, ref_gains = runner.outputs(probe)
    changes, target_gains, own_gains = [], [], []
    target_rows = np.flatnonzero(task == -1)
    target = args.goal == "target" and runner.kind == "classifier"
    ref_target = runner.class_gains(ref[target_rows], probe.labels) if target else None
    for i, ck in enumerate(tuned):
        runner.load(ck)
        out, gains = runner.outputs(probe)
        changes.append(out - ref)
        if args.goal == "target":
            own = np.flatnonzero(task == i)
            if runner.kind == "classifier":
                mine = out[own].argmax(1)
                target_gains.append(runner.class_gains(out[target_rows], probe.labels) - ref_target)
                own_gains.append(runner.class_gains(out[own], mine) - runner.class_gains(ref[own], mine))
            else:
                target_gains.append(gains[target_rows] - ref_gains[target_rows])
                own_gains.append(gains[own] - ref_gains[own])
    constants = Constants.literal(runner.width)
    forget = None if args.forget is None else args.forget - 1
    return suggest(args.goal, changes, task, constants, forget, target_gains or None, own_gains or None)


def _report(args: argparse.Namespace, s) -> None:  # noqa: ANN001
    for name, e in s.estimates.items():
        print(f"{name} = {e.value:+.3f}  95 % interval [{e.low:+.3f}, {e.high:+.3f}]  ({e.method}, {e.n} examples)")
    print(f"relation: {s.relation}")
    print("λ = " + " ".join(f"{x:g}" for x in s.lambdas))
    print(f"region: {s.region}")
    print(f"guarantee: {'holds' if s.guaranteed else 'does not hold'} — {s.reason}")
    cmd = ["python", "-m", "tvutils", "merge", "--base", args.base, "--finetuned", *args.finetuned,
           "--lambdas", *[f"{x:g}" for x in s.lambdas], "--out", args.out]  # fmt: skip
    print("merge: " + " ".join(shlex.quote(c) for c in cmd))
