"""The theory chapters' shared parameters and the one builder of their configs.

Every theory chapter starts from the same data model, learner and fine-tuning (every value is our [choice],
as the paper leaves them open). Its DEFAULTS cell holds only what it varies:

    DEFAULTS = THEORY_DEFAULTS | {"alphas": [...], "seeds": [0, 1, 2], ...}
    P = resolve(DEFAULTS, profile, PROFILES, overrides)
    data_cfg, learner_cfg, train_cfg = setting(P)            # or setting(P, m=256, lr_W=0.0, ...)
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any, NamedTuple

from .data import DataConfig
from .model import LearnerConfig
from .training import TrainConfig

THEORY_DEFAULTS: dict[str, Any] = {
    # data model
    "d": 64,  # token dimension
    "P": 20,  # tokens per sample
    "M": 20,  # irrelevant patterns
    "disc_frac": 0.3,  # fraction of tokens that are ±μ_T
    "noise": 0.0,  # token noise (std of the whole noise vector)
    # learner (eq. 3)
    "m": 128,  # neurons
    "w_init": 0.0,  # W⁽⁰⁾ = w_init · I (0: uniform attention at the start)
    "v_init": 0.01,  # std of V⁽⁰⁾'s entries
    "a_per_position": False,  # one sign vector a for every position (False) or one per position (True)
    # fine-tuning: SGD on the hinge loss
    "lr": 1.0,  # SGD step size
    "lr_W": None,  # step size of W (None: lr)
    "batch_size": 64,
    "max_steps": 3000,  # step budget
    "epsilon": 0.05,  # ε: every Ψ*_T is trained until its test hinge loss ≤ ε (and test error ≤ 0.01)
}
TARGET_ERROR = 0.01  # fine-tuning also stops only once the test error is at most this


class Setting(NamedTuple):
    data: DataConfig
    learner: LearnerConfig
    train: TrainConfig


def setting(params: SimpleNamespace | Mapping[str, Any], **changes: Any) -> Setting:
    """The data, learner and training configs of a chapter's parameters, with ``changes`` applied on top.

    ``params`` is the chapter's resolved ``P`` (or any mapping) holding every key of ``THEORY_DEFAULTS``;
    ``changes`` may set any of those keys (e.g. ``m=256``) and nothing else.
    """
    given = params if isinstance(params, Mapping) else vars(params)
    missing = sorted(set(THEORY_DEFAULTS) - set(given))
    if missing:
        raise ValueError(f"the parameters lack the theory chapters' key(s) {missing}; start from THEORY_DEFAULTS")
    unknown = sorted(set(changes) - set(THEORY_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; known: {sorted(THEORY_DEFAULTS)}")
    k = {name: given[name] for name in THEORY_DEFAULTS} | changes
    data = DataConfig(d=k["d"], P=k["P"], M=k["M"], disc_frac=k["disc_frac"], noise=k["noise"])
    learner = LearnerConfig(
        d=k["d"], m=k["m"], P=k["P"], w_init=k["w_init"], v_init=k["v_init"], a_per_position=k["a_per_position"]
    )
    train = TrainConfig(
        lr=k["lr"],
        lr_W=k["lr_W"],
        batch_size=k["batch_size"],
        max_steps=k["max_steps"],
        target_error=TARGET_ERROR,
        target_loss=k["epsilon"],
    )
    return Setting(data, learner, train)
