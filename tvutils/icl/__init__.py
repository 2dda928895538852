"""The ICML 2024 in-context-learning paper's theory model (Part II of the book), the twin of ``tvutils.taskvec``.

data         IDR/irrelevant patterns, tasks as ordered pattern pairs, prompts, out-of-domain constructions
model        eq. (1): F(Ψ; P) = aᵀ ReLU(W_O Σᵢ W_V pᵢ · softmax((W_K pᵢ)ᵀ W_Q p_query))
training     hinge-loss SGD over a set of training tasks (and Adam, warm-up, clipping for GPT-2)
experiments  trained learners, error over (α', l_ts), needed prompt length, the mechanism read off the weights
theorems     what Theorems 1-3 predict; exponents fitted in log-log with bootstrap intervals over seeds
seeds        every seed by its role
config       the chapters' shared parameters and the one builder of their configs
sparsity     Theorem 3: W_O's neuron norms, pruning them smallest-first, at random, largest-first
gpt2         the small GPT-2 (transformers' GPT2Model on inputs_embeds) trained on the same prompts
"""
