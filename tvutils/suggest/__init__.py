"""Choosing λ from the theorems: estimate the task relations in output space on a small probe, name them, and
return the λ the theorems' regions point to, with the region, a reason and whether the guarantee holds.

``api.suggest`` (outputs in, ``Suggestion`` out), ``estimate`` (α̂ and γ̂ with intervals), ``rules`` (the rule of
each goal and the theory's constants), ``baselines`` (how practitioners choose λ), ``models`` and ``cli``
(``python -m tvutils suggest`` on safetensors checkpoints), ``scoring`` (regret against a grid search).
"""

GOALS = ("add", "forget", "target")  # here, not in rules: the command line's parser reads it without torch
