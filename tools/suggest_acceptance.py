#!/usr/bin/env python
"""End to end on the ViT case study: checkpoints written as safetensors, ``python -m tvutils suggest`` on them, the
merge command it prints, and the merged model's score against what the chapter "Choosing λ" reports.

    python tools/suggest_acceptance.py --profile ci|default --run 0 --goal add --second irrelevant --workdir DIR
    python tools/suggest_acceptance.py --workload lm --profile ci|default --run 0 --workdir DIR

For one run of chapter 07 (read from its cache, or rebuilt by the same functions) it writes, in the
``transformers`` layout: Ψ⁽⁰⁾ (the pre-trained encoder with the run's parity head), Ψ*_T1 and Ψ*_T2 (T2 = the
``--second`` task, or the irrelevant one for ``--goal target``); the probe file the chapter's rule reads (the same
digits and colours) and, for the target, its labels. It runs the command line, then the merge command it printed,
loads the merged folder, scores it on half B exactly as the chapter does, and prints both numbers.

With ``--workload lm``, one run of chapter 08 (forget book A, keep book C): the command line reads Ψ⁽⁰⁾, Ψ*_C and
Ψ*_A (α̂'s single-book fine-tunes, the models the chapter's rule reads) with the chapter's probe of token ids, and
prints λ = (1, λ_A). The merge it prints would add those probe models; the chapter's edit is Ψ⁽⁰⁾′ + λ_A ΔΨ_A, so
the tool runs ``python -m tvutils merge`` on Ψ⁽⁰⁾′ and Ψ⁽⁰⁾′ + ΔΨ_A (both written too) with the printed λ_A,
and scores the merged model's greedy continuations on half B as the chapter does.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tvutils.chapter.runtime import fix_threads  # noqa: E402
from tvutils.suggest import rules, scoring  # noqa: E402
from tvutils.suggest import vision as sv  # noqa: E402

# the chapter's ViT parameters per profile (notebooks/09_choosing_lambda.ipynb, DEFAULTS and PROFILES["ci"])
PROFILES = {
    "default": dict(n_test=600, n_ood=300, n_train=3000, lambda_step=0.2, ood_step=0.5, n_probe=64, ada_steps=20,
                    pretrain={"n_train": 60000, "epochs": 1.0, "lr": 1e-3, "weight_decay": 0.05, "batch_size": 128,
                              "seed": 0}),
    "ci": dict(n_test=200, n_ood=100, n_train=600, lambda_step=0.5, ood_step=1.0, n_probe=16, ada_steps=10,
               pretrain={"n_train": 5000, "epochs": 1.0, "lr": 1e-3, "weight_decay": 0.05, "batch_size": 128,
                         "seed": 0}),
}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=("vit", "lm"), default="vit")
    ap.add_argument("--profile", choices=PROFILES, default="ci")
    ap.add_argument("--run", type=int, default=0)
    ap.add_argument("--goal", choices=("add", "forget", "target"), default="add")
    ap.add_argument("--second", choices=("irrelevant", "aligned", "contradictory"), default="irrelevant")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--max-halfwidth", default=None, help="passed to the command line (the ci probe is small)")
    args = ap.parse_args()
    fix_threads(1)
    if args.workload == "lm":
        return lm_main(args)
    p = PROFILES[args.profile]
    runs, grid = sv.vit_case_runs([args.run], p["n_test"], p["n_ood"], p["n_train"], p["lambda_step"],
                                   p["ood_step"], p["pretrain"], p["n_probe"], p["ada_steps"], (3, 20))  # fmt: skip
    r = runs[args.run]
    constants = rules.Constants.literal(sv.VIT["hidden_size"])
    target = args.goal == "target"
    second = "irrelevant" if target else args.second
    rows = sv.target_cases(r, grid, constants) if target else sv.pair_cases(r, second, constants)
    chapter = next(x for x in rows if x["goal"] == args.goal and x["method"].startswith("theory rule"))

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=False)
    names = ("T1", second)
    r.base.save_pretrained(work / "base", safe_serialization=True)
    for name in names:
        r.result.task_vectors[name].apply_to(r.base).save_pretrained(work / name, safe_serialization=True)
    n = r.result.grid.shape[-1] if target else r.test_pair.shape[1]
    colour, digit, task, labels = r.probe(names, n, target="ood" if target else None)
    save_file({"pixel_values": r.pixel_probe(colour, digit).contiguous(), "task": torch.as_tensor(task)},
              str(work / "probe.safetensors"))  # fmt: skip
    cmd = [sys.executable, "-m", "tvutils", "suggest", "--base", str(work / "base"), "--finetuned",
           *[str(work / k) for k in names], "--goal", args.goal, "--probe", str(work / "probe.safetensors"),
           "--out", str(work / "merged")]  # fmt: skip
    if args.max_halfwidth is not None:
        cmd += ["--max-halfwidth", args.max_halfwidth]
    if target:
        save_file({"labels": torch.as_tensor(labels)}, str(work / "labels.safetensors"))
        cmd += ["--target-labels", str(work / "labels.safetensors")]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    print("$ " + shlex.join(["python", *cmd[1:]]))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    print(out.stdout + out.stderr, end="")
    if out.returncode != 0:
        return out.returncode
    merge = shlex.split(next(x for x in out.stdout.splitlines() if x.startswith("merge: "))[len("merge: ") :])
    print("$ " + shlex.join(merge))
    done = subprocess.run([sys.executable, *merge[1:]], capture_output=True, text=True, env=env)
    print(done.stdout + done.stderr, end="")
    if done.returncode != 0:
        return done.returncode

    from transformers import ViTForImageClassification

    merged = ViTForImageClassification.from_pretrained(str(work / "merged"), use_safetensors=True).eval()
    from tvutils.vision import evaluation as ve

    x = r.test_pair[:, :n]
    margins = ve.colour_margins(merged, x)[None]
    score_half = r.halves(n)[1]
    lams = [float(v) for v in merge[merge.index("--lambdas") + 1 : merge.index("--out")]]
    if target:
        measured = float(sv._acc(r, margins, ("ood",), score_half)[0, 0])
    else:
        acc = sv._acc(r, margins, names, score_half)
        ref = sv._acc(r, r.result.models["T1"][None], names[:1], score_half)[0] if args.goal == "forget" else None
        measured = float(scoring.utility(args.goal, acc, ref)[0])
    report = {"λ printed": lams, "λ in the chapter": chapter["λ"], "score of the merged checkpoint (half B)": measured,
              "score the chapter computes for this run": chapter["score"]}  # fmt: skip
    print(json.dumps(report, ensure_ascii=False, indent=1))
    return 0 if abs(measured - chapter["score"]) <= TOLERANCE else 1


# the chapter's language parameters per profile (DEFAULTS["lm"], PROFILES["ci"]["lm"]) and its λ grid
LM = {"default": dict(model="smollm2-135m", n_passages=20, prompt_len=32, continuation_len=16, train_layers=8,
                      base_rank=16, base_epochs=8, base_lr=2e-3, lora_rank=8, forget_epochs=4, forget_lr=1e-3,
                      alpha_epochs=1, alpha_lr=2e-3, batch_size=8, eval_batch_size=60),
      "ci": dict(model="smollm2-135m", n_passages=16, prompt_len=24, continuation_len=8, train_layers=2, base_rank=16,
                 base_epochs=6, base_lr=1e-2, lora_rank=8, forget_epochs=6, forget_lr=1e-2, alpha_epochs=3,
                 alpha_lr=1e-2, batch_size=4, eval_batch_size=48)}  # fmt: skip
LM_GRID = {"default": (-2.0, 0.0, 0.25), "ci": (-2.0, 0.0, 1.0)}
LM_TOLERANCE = 1.0  # points of utility: float32 rounding of the merge may change a greedy token here and there


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    print("$ " + shlex.join(["python", *cmd[1:]]))
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    print(done.stdout + done.stderr, end="")
    return done


def lm_main(args: argparse.Namespace) -> int:
    """The language workload (module docstring)."""
    from transformers import AutoModelForCausalLM

    from tvutils.editing.inplace import add_in_place, task_arithmetic
    from tvutils.language import generation, models
    from tvutils.suggest import language as sl
    from tvutils.taskvec.theorems import lambda_grid

    p = dict(LM[args.profile], seeds=[args.run])
    u = sl.unlearning_runs(p)
    r = u.runs[args.run]
    grid = [float(x) for x in lambda_grid(*LM_GRID[args.profile])]
    chapter = sl.lm_cases(u, args.run, grid, rules.Constants.literal(u.model.config.hidden_size))[0]
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=False)
    model, tokenizer = models.load_model(p["model"])  # Ψ⁽⁰⁾
    model.save_pretrained(work / "base")
    for k in "CA":
        with task_arithmetic(model, r.pair[k][1], 1.0):
            model.save_pretrained(work / f"psi_{k}")
    add_in_place(model, u.base_tv, 1.0)  # Ψ⁽⁰⁾′
    model.save_pretrained(work / "edit_base")
    with task_arithmetic(model, r.forget[1], 1.0):
        model.save_pretrained(work / "edit_forget")
    del model
    select, score = u.halves(args.run)
    rows, task = sl.probe_rows(u.n, select)
    ac = torch.cat([torch.arange(len(u.ids))[u.part(k)] for k in "AC"])
    save_file(
        {"input_ids": u.ids[ac][rows].contiguous(), "task": torch.as_tensor(task)}, str(work / "probe.safetensors")
    )
    cmd = [sys.executable, "-m", "tvutils", "suggest", "--base", str(work / "base"), "--finetuned",
           str(work / "psi_C"), str(work / "psi_A"), "--goal", "forget", "--probe", str(work / "probe.safetensors"),
           "--out", str(work / "merged-probe-models")]  # fmt: skip
    if args.max_halfwidth is not None:
        cmd += ["--max-halfwidth", args.max_halfwidth]
    out = _run(cmd)
    if out.returncode != 0:
        return out.returncode
    lam = float(next(x for x in out.stdout.splitlines() if x.startswith("λ = ")).split()[-1])
    merge = [sys.executable, "-m", "tvutils", "merge", "--base", str(work / "edit_base"), "--finetuned",
             str(work / "edit_forget"), "--lambdas", f"{lam:g}", "--out", str(work / "merged")]  # fmt: skip
    if _run(merge).returncode != 0:
        return 1
    merged = AutoModelForCausalLM.from_pretrained(str(work / "merged"), use_safetensors=True).eval()
    with torch.no_grad():
        rouge, _ = generation.score_passages(merged, tokenizer, u.ids, p["prompt_len"], p["eval_batch_size"])
    measured, ours, m = u.utility({"rouge": rouge}, score), u.edit(args.run, lam)["rouge"], score.numpy()
    books = {f"Rouge-L of {k} on half B (merged checkpoint, chapter)": (float(rouge[u.part(k)][m].mean()),
             float(ours[u.part(k)][m].mean())) for k in "AC"}  # fmt: skip
    report = {"λ_A printed": lam, "λ_A in the chapter": chapter["λ"], **books,
              "utility of the merged checkpoint (half B)": measured,
              "utility the chapter computes for this run": chapter["score"]}  # fmt: skip
    print(json.dumps(report, ensure_ascii=False, indent=1))
    return 0 if abs(measured - chapter["score"]) <= LM_TOLERANCE else 1


TOLERANCE = 0.5  # points: the merge's float32 rounding may flip a digit whose margin is ~0 (one digit of 300 is 0.33)


if __name__ == "__main__":
    sys.exit(main())
