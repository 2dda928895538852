# %% [markdown]
# # Theorem 3: out-of-domain generalization by task arithmetic
#
# Task vectors of tasks the model has seen can be combined into a model for a task it has never seen.
# {cite}`li2025task` prove when (poster, Theorem 3):
#
# > Suppose all $\mu_{\mathcal{T}_i}$ are orthogonal to each other, the discriminative pattern of
# > $\mathcal{T}'$ is $\mu_{\mathcal{T}'} = \sum_{i} \gamma_i \mu_{\mathcal{T}_i} + \kappa\,\mu'_\perp$ with
# > $\mu'_\perp \perp \{\mu_{\mathcal{T}_i}\}$, and not all $\gamma_i$ are zero. Let
# > $\Psi = \Psi^{(0)} + \sum_i \lambda_i \Delta\Psi_{\mathcal{T}_i}$, $\lambda_i \neq 0$. Then, for some
# > $c \in (0, 1)$ and all $i$, and a non-empty region of $\lambda_i$ where
# > $$\sum_i \lambda_i\gamma_i \ge 1 + c, \qquad \sum_i \lambda_i\gamma_i^2 \ge 1 + c, \qquad |\lambda_i|\,\beta \le c,$$
# > we have $\mathbb{E}_{(X, y)\sim\mathcal{D}_{\mathcal{T}'}}\,\ell(X, y; \Psi) \le \Theta(\epsilon)$.
#
# Here $\beta = \Theta(1/d)$ and ε is the fine-tuning error. In the paper's vision experiment (Colored-MNIST,
# ViT-Small) the authors estimated $\gamma_1 \approx 0.792$, $\gamma_2 \approx -0.637$ and found that the best
# merge over $\lambda \in [-2, 3]$ nearly matched a model fine-tuned on $\mathcal{T}'$ (their Table 2).
#
# **The success rule, fixed before measuring.** The theorem bounds the **test hinge loss** on
# $\mathcal{T}'$, so a merge succeeds when that loss is at most $\Theta(\epsilon)$, read as $2\epsilon$
# (ε = 0.05, the loss the fine-tuned models are trained to; the factor 2 is our choice and the same one the
# Theorem 1-2 chapter uses). Accuracy is shown beside the loss, never used to judge. The chapter counts as
# reproduced when
# 1. inside the theorem's region drawn on the grid, at least 90% of the cells succeed;
# 2. the best merge has a lower $\mathcal{T}'$ loss than both single-task models $\Psi^*_{\mathcal{T}_1}$ and
#    $\Psi^*_{\mathcal{T}_2}$ (chosen on one half of the test set, scored on the other);
# 3. $\hat\gamma$, estimated from the models alone, is within 0.1 of γ in every component.
#
# | | |
# | --- | --- |
# | **Prerequisites** | the setup chapter (data model, learner, task vectors) |
# | **Time to run** | about 1 minute on 2 CPU cores (defaults; 25 s of CPU); under a minute on the CI profile |
# | **What is checked** | success inside Theorem 3's region; the best merge beats both source models on $\mathcal{T}'$; $\hat\gamma$ vs γ; where the observed edges lie compared with $1 + c$ |

# %%
# In Colab: fetch the book's code and install it (elsewhere this cell does nothing).
import sys

if "google.colab" in sys.modules:
    import os
    import subprocess

    subprocess.run(
        ["git", "clone", "--depth=1", "https://github.com/task-vector-book/task-vectors-book", "/content/tvbook"],
        check=True,
    )
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "/content/tvbook[case-studies]"], check=True)
    sys.path.insert(0, "/content/tvbook")
    os.chdir("/content/tvbook/notebooks")

# %% tags=["parameters"]
profile = "default"  # "ci": the small run CI executes
overrides = {}  # any parameter of DEFAULTS by name, e.g. {"seeds": [0]}

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tvutils.data import DataConfig, ood_tasks
from tvutils.experiments import fine_tune_tasks, pretrained
from tvutils.model import LearnerConfig
from tvutils.ood import (
    balanced_accuracy,
    best_cell,
    fit_thresholds,
    lower_edge,
    orthant,
    orthant_edge,
    run_ood,
    theorem3_coordinates,
)
from tvutils.params import resolve
from tvutils.plotting import heatmap, region_outline
from tvutils.theory import agreement, lambda_grid, theorem3_region
from tvutils.training import TrainConfig
from tvutils.verdict import Verdict

DEFAULTS = {
    # data model and learner: the setup chapter's sizes and initialisation (SPEC §2-3; all our [choice])
    "d": 64,  # token dimension
    "P": 20,  # tokens per sample
    "M": 20,  # irrelevant patterns
    "disc_frac": 0.3,  # fraction of tokens that are ±μ_T
    "noise": 0.0,  # token noise
    "m": 128,  # neurons
    "w_init": 0.0,  # W⁽⁰⁾ = w_init · I
    "v_init": 0.01,  # std of V⁽⁰⁾'s entries
    # fine-tuning (SPEC §4; our [choice] of step size, batch and budget)
    "lr": 1.0,
    "batch_size": 64,
    "max_steps": 3000,
    "epsilon": 0.05,  # target test hinge loss ε of every fine-tuned model
    # the out-of-domain task μ_T' = γ₁μ_T1 + γ₂μ_T2 + κμ'_⊥; [choice] (γ, κ) divided by √(Σγ² + κ²)
    "settings": {
        "paper": {"gammas": [0.792, -0.637], "kappa": 0.0},  # the paper's vision estimate (squares sum to 1.033)
        "positive": {"gammas": [0.7, 0.5], "kappa": 0.51},  # [choice] both γ positive, κ > 0
    },
    # the grid of the paper's Figure 7
    "lam1_range": [-2.0, 3.0],
    "lam2_range": [-2.0, 2.0],
    "step": 0.2,
    # the theorem's constants, drawn literally: β = 1/d and c ∈ (0, 1) [choice: c = 0.1]
    "c": 0.1,
    # success rule, fixed before measuring: T' test hinge loss ≤ eps_factor · ε [choice: Θ(ε) read as 2ε]
    "eps_factor": 2.0,
    "seeds": [0, 1, 2],  # the first seed fits the observed thresholds, the others score them
    "n_test": 1000,  # T' test samples per seed (split in two halves)
    "gamma_tol": 0.1,  # |γ̂ − γ| allowed per component
    "min_agreement": 0.9,  # success rate required inside a drawn region
}
PROFILES = {"ci": {"seeds": [0, 1], "n_test": 300}}
P = resolve(DEFAULTS, profile, PROFILES, overrides)

data_cfg = DataConfig(d=P.d, P=P.P, M=P.M, disc_frac=P.disc_frac, noise=P.noise)
learner_cfg = LearnerConfig(d=P.d, m=P.m, P=P.P, w_init=P.w_init, v_init=P.v_init)
train_cfg = TrainConfig(
    lr=P.lr, batch_size=P.batch_size, max_steps=P.max_steps, target_error=0.01, target_loss=P.epsilon
)
lam1, lam2 = lambda_grid(*P.lam1_range, P.step), lambda_grid(*P.lam2_range, P.step)
beta = 1 / P.d  # literal β = 1/d
success_loss = P.eps_factor * P.epsilon
print(f"grid: {len(lam1)} × {len(lam2)} = {len(lam1) * len(lam2)} merges; success: T' loss ≤ {success_loss:g}")

# %% [markdown]
# ## The tasks
#
# $\mathcal{T}_1$ and $\mathcal{T}_2$ have orthogonal patterns $\mu_{\mathcal{T}_1} = e_0$,
# $\mu_{\mathcal{T}_2} = e_1$; $\mathcal{T}'$ has $\mu_{\mathcal{T}'} = \gamma_1 e_0 + \gamma_2 e_1 + \kappa e_2$
# (`tvutils.data.ood_tasks`). Patterns have unit norm, so $\gamma_1^2 + \gamma_2^2 + \kappa^2 = 1$ must hold.
# **The paper's estimate does not satisfy it**: $0.792^2 + 0.637^2 = 1.033$. Our choice is to divide
# $(\gamma, \kappa)$ by $\sqrt{\sum\gamma_i^2 + \kappa^2}$, which keeps the direction (the ratio
# $\gamma_1/\gamma_2$) and gives $\gamma = (0.779, -0.627)$, $\kappa = 0$: $\mathcal{T}'$ then lies in the span
# of the two source tasks, positively correlated with $\mathcal{T}_1$ and negatively with $\mathcal{T}_2$, as
# in the paper. Every γ below means the normalised one. The second setting has both γ positive and a part
# $\kappa > 0$ that neither source task has seen.

# %%
settings = {name: ood_tasks(s["gammas"], s["kappa"], data_cfg, normalize=True) for name, s in P.settings.items()}
pd.DataFrame(
    [
        {
            "setting": name,
            "γ given": tuple(P.settings[name]["gammas"]),
            "κ given": P.settings[name]["kappa"],
            "Σγ² + κ² given": sum(g * g for g in P.settings[name]["gammas"]) + P.settings[name]["kappa"] ** 2,
            "γ used": tuple(round(g, 3) for g in ood.gammas),
            "κ used": round(ood.kappa, 3),
            "μ_T'ᵀμ_T1": float(ood.target.mu @ ood.sources[0].mu),
            "μ_T'ᵀμ_T2": float(ood.target.mu @ ood.sources[1].mu),
        }
        for name, ood in settings.items()
    ]
).set_index("setting").round(3)

# %% [markdown]
# ## Fine-tuning, γ̂, and the grid
#
# For every seed: one $\Psi^{(0)}$, then $\Psi^*_{\mathcal{T}_1}$, $\Psi^*_{\mathcal{T}_2}$ (shared by both
# settings: the source tasks are the same) and, per setting, $\Psi^*_{\mathcal{T}'}$ as the reference, each
# fine-tuned from $\Psi^{(0)}$ to test loss ≤ ε. `tvutils.ood.run_ood` then evaluates
# $\Psi = \Psi^{(0)} + \lambda_1\Delta\Psi_{\mathcal{T}_1} + \lambda_2\Delta\Psi_{\mathcal{T}_2}$ at every
# point of the grid on a fresh $\mathcal{T}'$ test set, and estimates γ three ways, none of which reads
# $\mu_{\mathcal{T}'}$:
#
# * **output similarity** (our main estimate, in the spirit of the paper's
#   $\hat\alpha = \mathbb{E}_X[\mathrm{Sim}(f(X;\Psi^*_{\mathcal{T}_1}), f(X;\Psi^*_{\mathcal{T}_2}))]$):
#   $\hat\gamma_i = \mathbb{E}_{\mathcal{T}'}[y\,\Delta f_i] / \mathbb{E}_{\mathcal{T}_i}[y\,\Delta f_i]$ with
#   $\Delta f_i = f(\cdot;\Psi^*_{\mathcal{T}_i}) - f(\cdot;\Psi^{(0)})$ — the margin the source model adds on
#   $\mathcal{T}'$ inputs, in units of the margin it adds on its own task;
# * **read-out directions**: the cosine of $\bar a^\top\Delta V$ of $\Delta\Psi_{\mathcal{T}_i}$ and of
#   $\Delta\Psi_{\mathcal{T}'}$ (needs $\Psi^*_{\mathcal{T}'}$);
# * **cosine of whole task vectors**, the common recipe.

# %%
runs = {name: [] for name in settings}
finetune_rows = []
for seed in P.seeds:
    model0 = pretrained(learner_cfg, seed)
    sources = fine_tune_tasks(model0, settings["paper"].sources, train_cfg, [1000 * seed + 1, 1000 * seed + 2])
    for k, (name, ood) in enumerate(settings.items()):
        (target,) = fine_tune_tasks(model0, [ood.target], train_cfg, [1000 * seed + 10 + k])
        models = [sources[0].model, sources[1].model, target.model]
        runs[name].append(run_ood(model0, ood, models, lam1, lam2, P.n_test, seed))
        finetune_rows += [
            {"seed": seed, "setting": name, "model": f"Ψ*_{ft.task.name}", "reached ε": ft.reached}
            for ft in (*sources, target)
        ]
reached = pd.DataFrame(finetune_rows)
print(f"every fine-tuned model reached its target: {bool(reached['reached ε'].all())}")

# %%
gamma_rows = []
for name, rs in runs.items():
    for i in range(2):
        gamma_rows.append(
            {
                "setting": name,
                "component": f"γ{i + 1}",
                "γ (normalised)": rs[0].gammas[i],
                "paper's estimate": P.settings[name]["gammas"][i] if name == "paper" else np.nan,
                "γ̂ output similarity": np.mean([r.gamma_outputs[i] for r in rs]),
                "max |γ̂ − γ| (outputs)": max(abs(r.gamma_outputs[i] - r.gammas[i]) for r in rs),
                "γ̂ read-out": np.mean([r.gamma_readout[i] for r in rs]),
                "γ̂ task-vector cosine": np.mean([r.gamma_cosine[i] for r in rs]),
            }
        )
gamma_table = pd.DataFrame(gamma_rows).set_index(["setting", "component"])
gamma_table.round(3)

# %% [markdown]
# γ̂ by output similarity lands a few hundredths below |γ| (the softmax and ReLU make the response to a
# weaker pattern slightly sub-linear); the read-out direction recovers γ almost exactly, because fine-tuning
# moves each neuron of V along $\pm\mu_{\mathcal{T}}$ with the sign of its $a$. The cosine of whole task
# vectors is wrong for the negatively correlated task: every task vector also carries a component that all
# tasks share (ΔV's rows all shift along the mean irrelevant pattern, a common bias), which pulls every cosine
# towards a positive value. That is the same failure the vision prototype saw (SPEC §10), and why the regions
# below are drawn from the output-similarity γ̂.

# %% [markdown]
# ## The (λ₁, λ₂) heatmaps with Theorem 3's region
#
# Regions drawn on the measurement (seed 0 of each setting):
#
# * **literal, from γ̂** (black): $\sum\lambda_i\hat\gamma_i \ge 1 + c$, $\sum\lambda_i\hat\gamma_i^2 \ge 1 + c$,
#   $|\lambda_i|\beta \le c$ with the literal $\beta = 1/d$ and our $c$ (the $|\lambda_i|\beta \le c$ condition
#   allows $|\lambda_i| \le c\,d$ and never binds on this grid);
# * **literal, from the true γ** (magenta, dotted): the same with γ;
# * **fitted** (red, dashed): the same form with the two thresholds $1 + c$ replaced by $(\hat t_1, \hat t_2)$
#   fitted on the first seed (next section) and drawn with each seed's own γ̂.


# %%
def regions(run, t_fit):
    """Literal regions from γ̂ and γ, and the fitted region from γ̂ (masks over (λ₁, λ₂))."""
    literal_hat = theorem3_region(run.gamma_outputs, lam1, lam2, c=P.c, beta=beta)
    literal_true = theorem3_region(run.gammas, lam1, lam2, c=P.c, beta=beta)
    fitted = theorem3_region(run.gamma_outputs, lam1, lam2, c=P.c, beta=beta, thresholds=t_fit)
    return literal_hat, literal_true, fitted


fits = {}
for name, rs in runs.items():
    s1, s2 = theorem3_coordinates(rs[0].gamma_outputs, lam1, lam2)
    fits[name] = fit_thresholds(rs[0].mean_loss <= success_loss, s1, s2)

fig, axes = plt.subplots(len(runs), 2, figsize=(13, 4.6 * len(runs)), squeeze=False)
for row, (name, rs) in enumerate(runs.items()):
    run, fit = rs[0], fits[name]
    best = best_cell(run.mean_loss, run.mean_error, lam1, lam2)
    panels = [
        (run.mean_loss, "T' test hinge loss", "viridis_r", 0, 2),
        (1 - run.mean_error, "T' test accuracy", "viridis", 0, 1),
    ]
    for ax, (values, label, cmap, lo, hi) in zip(axes[row], panels):
        heatmap(ax, values.T, lam2, lam1, "$\\lambda_2$", "$\\lambda_1$", label, cmap=cmap, vmin=lo, vmax=hi)
        for mask, lab, col, ls in zip(
            regions(run, (fit.t1, fit.t2)),
            ["literal, from γ̂", "literal, from γ", "fitted (seed 0)"],
            ["black", "magenta", "red"],
            ["-", ":", "--"],
        ):
            region_outline(ax, mask.T, lam2, lam1, label=lab, color=col, linestyle=ls)
        ax.plot(1, 0, "o", color="black", ms=7, label="$\\Psi^*_{\\mathcal{T}_1}$ (1, 0)")
        ax.plot(0, 1, "s", color="black", ms=7, label="$\\Psi^*_{\\mathcal{T}_2}$ (0, 1)")
        ax.plot(lam1[best[0]], lam2[best[1]], "x", color="lime", ms=11, mew=3, label="best merge")
        g = run.gammas
        ax.set_title(f"{name}: γ = ({g[0]:.3f}, {g[1]:.3f}), κ = {settings[name].kappa:.2f}")
    axes[row, 0].legend(loc="lower right", fontsize=7, framealpha=0.85)
plt.tight_layout()
plt.show()

# %% [markdown]
# *Constants drawn: black and magenta use the literal thresholds $1 + c$ with $c = $ `P.c` and $\beta = 1/d$;
# red uses thresholds fitted on seed 0 (next section). Low loss is bright; the success rule is loss ≤ 2ε.*
#
# The literal region sits deep inside the low-loss area: it is a sufficient condition, and much smaller than
# where merging works. The accuracy map is mostly a sign condition (accuracy is 1 wherever $\sum\lambda_i\gamma_i$
# is clearly positive), which is why it cannot test the theorem's thresholds. In the lower-left corner of the
# paper setting, accuracy comes partly back although the loss stays high: the "double flip" of the setup
# notes — a negative λ both flips V's read-out and turns attention onto the minority tokens.
#
# ## Agreement inside the regions
#
# The fraction of cells inside each drawn region where the merge succeeds, per seed. The fitted region is
# scored only on the seeds it was not fitted on.

# %%
agree_rows = []
for name, rs in runs.items():
    fit = fits[name]
    for k, run in enumerate(rs):
        ok = run.mean_loss <= success_loss
        literal_hat, literal_true, fitted = regions(run, (fit.t1, fit.t2))
        agree_rows.append(
            {
                "setting": name,
                "seed": run.seed,
                "cells that succeed": int(ok.sum()),
                "literal γ̂: cells": int(literal_hat.sum()),
                "literal γ̂: success inside": agreement(literal_hat, ok),
                "literal γ: cells": int(literal_true.sum()),
                "literal γ: success inside": agreement(literal_true, ok),
                "fitted: cells": int(fitted.sum()),
                "fitted: success inside": agreement(fitted, ok) if k > 0 else np.nan,
                "fitted: balanced accuracy": balanced_accuracy(fitted, ok) if k > 0 else np.nan,
            }
        )
agree = pd.DataFrame(agree_rows).set_index(["setting", "seed"])
agree.round(3)

# %% [markdown]
# ## Where the edges lie
#
# In the theorem's coordinates $s_1 = \sum\lambda_i\gamma_i$ and $s_2 = \sum\lambda_i\gamma_i^2$ (computed with
# γ̂), Theorem 3's region is the quadrant $s_1 \ge 1 + c$, $s_2 \ge 1 + c$. `fit_thresholds` finds the quadrant
# $s_1 \ge \hat t_1$, $s_2 \ge \hat t_2$ that best matches the observed success cells of the first seed
# (highest balanced accuracy, thresholds placed midway between neighbouring cells); the table scores it on
# the other seeds. For comparison: the authors' own region figure (SPEC §5) has both thresholds ≈ 0.19,
# not $1 + c$.


# %%
def s2_reach(run, t1):
    """The lowest s₂ the grid reaches where s₁ ≥ t₁: an s₂ edge below it cannot be seen on this grid."""
    s1, s2 = theorem3_coordinates(run.gamma_outputs, lam1, lam2)
    return float(s2[s1 >= t1].min())


edge_rows = []
for name, rs in runs.items():
    fit = fits[name]
    held = [
        balanced_accuracy(
            orthant(*theorem3_coordinates(r.gamma_outputs, lam1, lam2), fit.t1, fit.t2), r.mean_loss <= success_loss
        )
        for r in rs[1:]
    ]
    edge_rows.append(
        {
            "setting": name,
            "fitted t̂₁ (s₁ edge)": fit.t1,
            "fitted t̂₂ (s₂ edge)": fit.t2 if np.isfinite(fit.t2) else "none on the grid",
            "lowest s₂ the grid reaches with s₁ ≥ t̂₁": s2_reach(rs[0], fit.t1),
            "theorem: 1 + c": 1 + P.c,
            "authors' figure": 0.19,
            "balanced accuracy, fitting seed": fit.balanced_accuracy,
            "balanced accuracy, other seeds": np.mean(held) if held else np.nan,
        }
    )
edges = pd.DataFrame(edge_rows).set_index("setting")
edges.map(lambda x: x if isinstance(x, str) else f"{x:.3f}")

# %%
fig, axes = plt.subplots(1, len(runs), figsize=(6.2 * len(runs), 4.8), squeeze=False)
for ax, (name, rs) in zip(axes[0], runs.items()):
    run, fit = rs[0], fits[name]
    s1, s2 = theorem3_coordinates(run.gamma_outputs, lam1, lam2)
    sc = ax.scatter(
        s1.ravel(), s2.ravel(), c=np.minimum(run.mean_loss, 2).ravel(), cmap="viridis_r", s=14, vmin=0, vmax=2
    )
    ok = run.mean_loss <= success_loss
    ax.scatter(
        s1[ok],
        s2[ok],
        facecolors="none",
        edgecolors="tab:red",
        s=34,
        lw=0.8,
        label=f"success (loss ≤ {success_loss:g})",
    )
    ax.axvline(1 + P.c, color="black", lw=1.5, label="theorem: $1 + c$ (literal)")
    ax.axhline(1 + P.c, color="black", lw=1.5)
    ax.axvline(fit.t1, color="tab:red", ls="--", lw=1.5, label="fitted $\\hat t_1$, $\\hat t_2$ (seed 0)")
    if np.isfinite(fit.t2):
        ax.axhline(fit.t2, color="tab:red", ls="--", lw=1.5)
    ax.set_xlabel("$s_1 = \\sum_i \\lambda_i \\hat\\gamma_i$")
    ax.set_ylabel("$s_2 = \\sum_i \\lambda_i \\hat\\gamma_i^2$")
    ax.set_title(f"{name}: every grid cell in the theorem's coordinates")
    plt.colorbar(sc, ax=ax, label="T' test hinge loss")
    ax.legend(loc="lower right", fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown]
# The same edges in the λ plane: for each $\lambda_2$, the smallest $\lambda_1$ from which every larger
# $\lambda_1$ succeeds (one line per seed), beside the lower edge of the literal region and of the fitted one.
# Where the edge follows $s_1 = t_1$ its slope is $d\lambda_1/d\lambda_2 = -\gamma_2/\gamma_1$; where it
# follows $s_2 = t_2$ it is $-\gamma_2^2/\gamma_1^2$.

# %%
fig, axes = plt.subplots(1, len(runs), figsize=(6.2 * len(runs), 4.2), squeeze=False)
for ax, (name, rs) in zip(axes[0], runs.items()):
    fit = fits[name]
    for r in rs:
        ax.plot(lam2, lower_edge(r.mean_loss <= success_loss, lam1), "o-", ms=3, lw=1, label=f"observed, seed {r.seed}")
    g_hat = rs[0].gamma_outputs
    ax.plot(lam2, orthant_edge(g_hat, 1 + P.c, 1 + P.c, lam2), color="black", lw=2, label="literal region ($1 + c$)")
    ax.plot(lam2, orthant_edge(g_hat, fit.t1, fit.t2, lam2), color="tab:red", ls="--", lw=2, label="fitted region")
    ax.set_ylim(lam1[0], lam1[-1] + 0.5)
    ax.set_xlabel("$\\lambda_2$")
    ax.set_ylabel("lower edge of success in $\\lambda_1$")
    ax.set_title(f"{name}: where success begins")
    ax.legend(fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The paper's Table 2, in our setting
#
# The layout of the paper's Table 2: the model fine-tuned on $\mathcal{T}'$, the two source models
# ($\lambda = (1, 0)$ and $(0, 1)$) and the best grid point by loss, here for the first seed, plus our loss at
# the paper's best λ. The paper chose its best λ on the test set; we show that choice and, beside it, the best
# λ chosen on one half of the test set and scored on the other. Like the theorem, the best merge keeps
# $\lambda_1, \lambda_2 \neq 0$. The hinge loss is exactly zero on many cells (every margin ≥ 1), so "best" is
# a tie among them: we break ties by accuracy, then by the smallest $\|\lambda\|$ (the smallest edit). The
# paper's accuracies (ViT on Colored-MNIST) are a labelled reference, not our result.


# %%
def table2(run):
    """Table 2's columns for one run: (λ₁, λ₂), T' loss and accuracy."""
    full_best = best_cell(run.mean_loss, run.mean_error, lam1, lam2)
    half_best = best_cell(run.loss[0], run.error[0], lam1, lam2)
    ref = run.reference["Ψ*_T'"].mean(0)
    cols = {"fine-tuned on T'": ("N/A", ref[0], 1 - ref[1])}
    for label, (i, j), h in [
        ("Ψ*_T1", run.cell(1, 0), None),
        ("Ψ*_T2", run.cell(0, 1), None),
        ("best λ (test set)", full_best, None),
        ("best λ (half A → half B)", half_best, 1),
        ("the paper's best λ", run.cell(1.2, -0.6), None),
    ]:
        lo = run.mean_loss[i, j] if h is None else run.loss[h, i, j]
        er = run.mean_error[i, j] if h is None else run.error[h, i, j]
        cols[label] = (f"({lam1[i]:g}, {lam2[j]:g})", lo, 1 - er)
    return pd.DataFrame(cols, index=["(λ₁, λ₂)", "T' loss (ours)", "T' accuracy (ours)"])


paper_row = pd.Series(
    {
        "fine-tuned on T'": "92.21 %",
        "Ψ*_T1": "88.10 % at (1, 0)",
        "Ψ*_T2": "45.06 % at (0, 1)",
        "best λ (test set)": "91.74 % at (1.2, −0.6)",
        "best λ (half A → half B)": "—",
        "the paper's best λ": "91.74 % at (1.2, −0.6)",
    },
    name="paper, T' accuracy (ViT, reference)",
)
for name, rs in runs.items():
    zero = [int((r.mean_loss == 0).sum()) for r in rs]
    j0 = rs[0].cell(0, 0)[1]  # the column λ₂ = 0: ΔΨ_T1 rescaled, T2 unused
    i0 = int(np.argmin(rs[0].mean_loss[:, j0]))
    print(
        f"{name}: grid cells with zero T' loss, per seed: {zero}; ΔΨ_T1 alone, rescaled: best λ₁ = "
        f"{lam1[i0]:g}, T' loss {rs[0].mean_loss[i0, j0]:.3f} (seed {rs[0].seed})"
    )
t2 = table2(runs["paper"][0])
pd.concat([t2.map(lambda x: x if isinstance(x, str) else f"{x:.3f}"), paper_row.to_frame().T])

# %%
table2(runs["positive"][0]).map(lambda x: x if isinstance(x, str) else f"{x:.3f}")

# %% [markdown]
# ## Verdict
#
# Thresholds as stated at the top, fixed before measuring. The fitted thresholds are fitted on the first seed
# and scored on the others only; the observed edges are checked against the theorem's $1 + c$ (a sufficient
# condition: the observed edges must lie at or below it).


# %%
def beats_singles(run):
    """T' loss margin of the best merge (chosen on half A) over the better source model, both scored on half B."""
    i, j = best_cell(run.loss[0], run.error[0], lam1, lam2)
    singles = [run.loss[1][run.cell(1, 0)], run.loss[1][run.cell(0, 1)]]
    return min(singles) - run.loss[1, i, j]


v = Verdict("03_out_of_domain", P.profile)
for name, rs in runs.items():
    a = agree.loc[name]
    v.check(
        f"[{name}] success inside Theorem 3's literal region drawn from γ̂",
        "min over seeds of the success rate",
        a["literal γ̂: success inside"].min(),
        P.min_agreement,
        ">=",
        paper="Theorem 3: loss ≤ Θ(ε) in the region",
    )
    v.check(
        f"[{name}] success inside Theorem 3's literal region drawn from γ",
        "min over seeds of the success rate",
        a["literal γ: success inside"].min(),
        P.min_agreement,
        ">=",
        paper="Theorem 3: loss ≤ Θ(ε) in the region",
    )
    if len(rs) > 1:
        v.check(
            f"[{name}] success inside the fitted region, on seeds it was not fitted on",
            "min over held-out seeds of the success rate",
            a["fitted: success inside"].iloc[1:].min(),
            P.min_agreement,
            ">=",
        )
    v.check(
        f"[{name}] the best merge beats Ψ*_T1 and Ψ*_T2 on T'",
        "min over seeds of (best single loss − best merge loss)",
        min(beats_singles(r) for r in rs),
        0.0,
        ">",
        paper="Table 2: 91.74 % merged vs 88.10 % (Ψ*_T1), 45.06 % (Ψ*_T2)",
    )
    v.check(
        f"[{name}] γ̂ by output similarity is within {P.gamma_tol} of γ",
        "max over seeds and i of |γ̂ᵢ − γᵢ|",
        max(np.abs(r.gamma_outputs - r.gammas).max() for r in rs),
        P.gamma_tol,
        "<=",
        paper="γ ≈ (0.792, −0.637) estimated" if name == "paper" else "",
    )
    v.check(
        f"[{name}] the observed s₁ edge lies at or below 1 + c",
        "fitted t̂₁ (seed 0)",
        fits[name].t1,
        1 + P.c,
        "<=",
        paper="Σλᵢγᵢ ≥ 1 + c; authors' figure ≈ 0.19",
    )
    s2_seen = np.isfinite(fits[name].t2)  # no s₂ edge on the grid: report the grid's reach, an upper bound
    v.check(
        f"[{name}] the observed s₂ edge lies at or below 1 + c",
        "fitted t̂₂ (seed 0)" if s2_seen else "upper bound: lowest s₂ the grid reaches with s₁ ≥ t̂₁ (seed 0)",
        fits[name].t2 if s2_seen else s2_reach(rs[0], fits[name].t1),
        1 + P.c,
        "<=",
        paper="Σλᵢγᵢ² ≥ 1 + c; authors' figure ≈ 0.19",
        note="" if s2_seen else "no s₂ edge inside the grid: every cell with s₁ ≥ t̂₁ succeeds whatever its s₂",
    )
v.check(
    "[paper] γ̂ by cosine of whole task vectors is within 0.1 of γ",
    "max over seeds and i of |γ̂ᵢ − γᵢ|",
    max(np.abs(r.gamma_cosine - r.gammas).max() for r in runs["paper"]),
    P.gamma_tol,
    "<=",
    asserted=False,
    note="the common recipe, shown beside our estimate (SPEC §6 [choice]); every task vector also carries a "
    "component all tasks share (the common bias ΔV's rows learn), which pulls the cosine of the negatively "
    "correlated T2 towards zero (≈ −0.15 for γ₂ = −0.63)",
)
v.finish()

# %% [markdown]
# ## What it means
#
# **Reproduced.** Inside Theorem 3's region, drawn literally ($c = 0.1$, $\beta = 1/d$) from the estimated γ̂
# or from the true γ, every merge we measured generalises to the unseen task $\mathcal{T}'$, in both settings
# and on every seed: the condition is sufficient. The best merge of the two source task vectors (λ₁, λ₂ ≠ 0)
# beats both source models on $\mathcal{T}'$, also when λ is chosen on one half of the test set and scored on
# the other. And γ can be read off the models without knowing $\mu_{\mathcal{T}'}$: by output similarity to
# within 0.04, by read-out directions almost exactly; the cosine of whole task vectors, by contrast, misses
# the negative $\gamma_2$ (−0.15 for −0.63) because all task vectors share a component.
#
# **What differs, and why.**
# * *The thresholds.* The observed edges lie far below the theorem's $1 + c$. In
#   $s_1 = \sum\lambda_i\gamma_i$ the edge sits near 0.8 in both settings: the source models are fine-tuned
#   past the success level (their margins mostly exceed 1), so less than one full task vector's worth of the
#   pattern already suffices — the "1" of $1 + c$ is in units of a model trained exactly to the limit. In
#   $s_2 = \sum\lambda_i\gamma_i^2$ the edge is near 0.13 in the paper setting, and is not reached on the grid
#   in the positive setting (the grid's cells with $s_1 \ge \hat t_1$ all have $s_2 \ge 0.39$, and all
#   succeed). The authors' own figure also drew thresholds far below $1 + c$ (≈ 0.19, SPEC §5). The theorem's
#   Θ(·) constants are conservative; its sufficient region is less than half of the region where merging
#   works.
# * *The shape.* A quadrant in $(s_1, s_2)$ describes the observed region well (balanced accuracy ≈ 0.97-0.99
#   on seeds it was not fitted on), but not perfectly: near its corner ($\lambda_2 \approx -0.6$ in the paper
#   setting) the quadrant promises success from $\lambda_1 \approx 0.6$, while success starts at
#   $\lambda_1 \approx 1$ — which is why the fitted region's success rate is 96 %, not 100 %. The observed edge
#   trades $s_1$ against $s_2$: a larger value part ($s_1$) makes up for weaker attention ($s_2$), as if
#   success needed their product rather than each separately. This is consistent with what each sum
#   governs — $s_1$ how strongly V reads the $\mathcal{T}'$ pattern, $s_2$ how strongly attention gathers on
#   it — but we have not isolated the mechanism. With $W^{(0)} = 0$ attention starts uniform, and a uniform
#   average of the tokens already separates the classes, so concentrated attention helps but is not needed
#   until $s_2$ turns negative (attention onto the minority tokens).
# * *Accuracy and the source models.* By accuracy, the paper's measure, most of the grid succeeds and
#   $\Psi^*_{\mathcal{T}_1}$ alone is already perfect on $\mathcal{T}'$; only the loss separates the merges.
#   Unlike the paper, where $\Psi^*_{\mathcal{T}_2}$ scored 45 % (near chance), our $\Psi^*_{\mathcal{T}_2}$ is
#   wrong on every $\mathcal{T}'$ sample: in this data model a negative $\gamma_2$ reverses the cue exactly.
#   And $\Delta\Psi_{\mathcal{T}_1}$ rescaled alone ($\lambda_2 = 0$) also reaches zero loss in the paper
#   setting: with $\kappa = 0$ and $\gamma_1 > 0$ one vector suffices here, and the second one mainly widens
#   the region. In the positive setting, where neither source model reaches the success level, adding both
#   vectors is what succeeds (best merge (1, 1)).
#
# Related reading: task arithmetic {cite}`ilharco2023editing` and its analysis in the tangent space
# {cite}`ortizjimenez2023tangent`; linear mode connectivity {cite}`frankle2020linear`.
