"""tvutils: the code of the book *Task vectors, provably*, one subpackage per concern.

editing/    model-agnostic editing: task vectors of any torch model and their algebra (task_vector),
            their low-rank and sparse variants (variants), merges in place (inplace), α̂ in output space
            (similarity), safetensors checkpoints (checkpoint) and streamed merges of them (streaming)
taskvec/    Part I's theory model (Li et al., ICLR 2025): data, model (eq. 3), training, grid (many merges
            at once), theorems (what Theorems 1-3 and Corollary 1 predict), boundaries (where success is
            observed), experiments, seeds, config; ood, low_rank, sparsity for the chapters beyond
icl/        Part II's theory model (Li et al., ICML 2024), the twin of taskvec: data (patterns, tasks, prompts,
            out-of-domain constructions), model (eq. 1: the one-layer learner), training (hinge-loss SGD),
            experiments, theorems (what Theorems 1-3 predict; exponents with bootstrap intervals), seeds,
            config, sparsity (pruning W_O's neurons); gpt2 (the small GPT-2 on the same prompts)
vision/     the ViT case study: data (Colored-MNIST), model, training, evaluation
language/   the language-model case study: books, models, lora, generation
chapter/    the chapters' own infrastructure: params, verdict, stats, plotting, progress, paths, data

python -m tvutils merge --base BASE --finetuned A B --lambdas 1.0 -0.6 --out OUT
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tvutils")  # pyproject.toml's [project] version, as installed
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
