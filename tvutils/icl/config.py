"""The Part II chapters' shared parameters and the one builder of their configs (the twin of
``tvutils.taskvec.config``).

Every Part II chapter starts from the same data model, learner and training (every value is our [choice]
where the talk leaves it open; M₁ = 6, M₂ = 24, α = 0.8 and 20 context examples are the paper's figures'
settings). Its DEFAULTS cell holds only what it varies:

    DEFAULTS = ICL_DEFAULTS | {"seeds": [0, 1, 2], ...}
    P = resolve(DEFAULTS, profile, PROFILES, overrides)
    data_cfg, learner_cfg, train_cfg = setting(P)            # or setting(P, alpha=0.4, ...)
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any, NamedTuple

from .data import DataConfig
from .gpt2 import GPT2LearnerConfig
from .model import LearnerConfig
from .training import TrainConfig

ICL_DEFAULTS: dict[str, Any] = {
    # data model
    "M1": 6,  # in-domain relevant patterns
    "M2": 24,  # irrelevant patterns
    "d": 32,  # feature dimension (≥ M1 + M2)
    "d_y": 4,  # label-embedding dimension
    "kappa": 0.5,  # x = μ_j + κ ν_k
    "noise": 0.0,  # Gaussian noise on x (std of the whole vector)
    # learner (eq. 1)
    "m": 64,  # neurons (rows of W_O)
    "qk_init": 0.1,  # W_Q⁽⁰⁾ = W_K⁽⁰⁾ = qk_init · I
    "v_init": 1.0,  # W_V⁽⁰⁾ = v_init · I
    "o_init": 0.01,  # std of W_O⁽⁰⁾ (small: Proposition 2's structure shows only from a small start)
    # training: SGD on the hinge loss
    "lr": 1.0,  # SGD step size
    "batch_size": 64,  # prompts per step
    "steps": 1200,  # SGD steps
    "alpha": 0.8,  # fraction of task-relevant context examples in training prompts
    "length": 20,  # context examples per training prompt
    "eval_every": 10,  # steps between evaluations on the validation prompts
}
GPT2_DEFAULTS: dict[str, Any] = {  # the small GPT-2 of the out-of-domain and pruning chapters
    "gpt2_layers": 3,
    "gpt2_heads": 2,
    "gpt2_width": 64,
    "gpt2_lr": 2e-3,  # Adam step size
    "gpt2_batch_size": 32,
    "gpt2_steps": 300,
    "gpt2_warmup": 50,  # steps of linear warm-up
    "gpt2_clip": 1.0,  # gradient-norm clipping
}


class Setting(NamedTuple):
    data: DataConfig
    learner: LearnerConfig
    train: TrainConfig


def _given(params: SimpleNamespace | Mapping[str, Any], keys: Mapping[str, Any], changes: Mapping[str, Any]) -> dict:
    given = params if isinstance(params, Mapping) else vars(params)
    missing = sorted(set(keys) - set(given))
    if missing:
        raise ValueError(f"the parameters lack the key(s) {missing}; start from ICL_DEFAULTS (and GPT2_DEFAULTS)")
    unknown = sorted(set(changes) - set(keys))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; known: {sorted(keys)}")
    return {name: given[name] for name in keys} | dict(changes)


def setting(params: SimpleNamespace | Mapping[str, Any], **changes: Any) -> Setting:
    """The data, learner and training configs of a chapter's parameters, with ``changes`` applied on top."""
    k = _given(params, ICL_DEFAULTS, changes)
    data = DataConfig(M1=k["M1"], M2=k["M2"], d=k["d"], d_y=k["d_y"], kappa=k["kappa"], noise=k["noise"])
    learner = LearnerConfig(D=data.D, m=k["m"], qk_init=k["qk_init"], v_init=k["v_init"], o_init=k["o_init"])
    train = TrainConfig(lr=k["lr"], batch_size=k["batch_size"], steps=k["steps"], alpha=k["alpha"],
                        length=k["length"], eval_every=k["eval_every"])  # fmt: skip
    return Setting(data, learner, train)


def gpt2_setting(params: SimpleNamespace | Mapping[str, Any], **changes: Any) -> tuple[GPT2LearnerConfig, TrainConfig]:
    """The GPT-2 learner's config and its training (Adam, warm-up, clipping) on the chapter's data and prompts."""
    k = _given(params, ICL_DEFAULTS | GPT2_DEFAULTS, changes)
    data, _, base = setting(k)
    learner = GPT2LearnerConfig(D=data.D, n_layer=k["gpt2_layers"], n_head=k["gpt2_heads"], n_embd=k["gpt2_width"])
    train = TrainConfig(lr=k["gpt2_lr"], batch_size=k["gpt2_batch_size"], steps=k["gpt2_steps"], alpha=base.alpha,
                        length=base.length, eval_every=max(1, k["gpt2_steps"] // 20), optimizer="adam",
                        warmup=k["gpt2_warmup"], clip=k["gpt2_clip"])  # fmt: skip
    return learner, train
