"""PEFT LoRA adapters as task vectors, for ``python -m tvutils merge --finetuned ADAPTER``.

A PEFT LoRA adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``) stands for the fine-tuned
model W + ΔW, with, per target module,

    ΔW = s · B·A,   s = lora_alpha / r   (``use_rslora``: lora_alpha / √r),

A = ``….lora_A.weight`` (r × in) and B = ``….lora_B.weight`` (out × r), the rank r read from A's shape (so a
``rank_pattern`` is followed exactly). A module whose base stores W as (in, out) (``fan_in_fan_out``: GPT-2's
Conv1D) gets ΔWᵀ. Its task vector is ΔW on the target modules' weights and 0 elsewhere; the merge forms the
product for one tensor at a time, a block of rows at a time (``tvutils.editing.engine``), never for the model.

Checked before any output exists: the adapter's keys map onto the base (``base_model.model.M.lora_A.weight`` on
``M.weight``), each such base tensor exists, is a float matrix, and has the shape (out, in) of B·A (or its
transpose with ``fan_in_fan_out``); a mismatch is refused naming the module. Refused by name, since they are not
plain LoRA: other PEFT types (LoHa, LoKr, IA³, AdaLoRA, …), DoRA (``use_dora``), ``modules_to_save`` (full
weights of whole modules), per-module ``alpha_pattern``, ``lora_bias``, ``layer_replication``,
``target_parameters``, activated LoRA, QA-LoRA and the other variants PEFT names in its config, initialisations
that change the base too (PiSSA, OLoRA, CorDA, LoftQ, LoRA-GA: made for another base), LoRA on embeddings or
convolutions, and any other key in the weights file.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import (
    FLOAT_DTYPES,
    INDEX_NAME,
    PICKLE_SUFFIXES,
    SINGLE_NAME,
    Checkpoint,
    CheckpointError,
    TensorInfo,
    read_header,
)

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<which>[AB])\.weight$")
_NOT_LORA = {  # a key fragment, and what it means
    "lora_magnitude_vector": "DoRA (lora_magnitude_vector)",
    "modules_to_save": "modules_to_save (full weights of whole modules)",
    "lora_embedding_": "LoRA on an embedding (lora_embedding_A/B)",
    "hada_": "LoHa",
    "lokr_": "LoKr",
    "ia3_": "IA³",
    "lora_E": "AdaLoRA",
    "lora_B.bias": "lora_bias",
    ".bias": "a bias trained with the adapter (bias='all' or 'lora_only')",
}
# config entries that make an adapter other than plain LoRA when set (not null, not false, not empty)
_REFUSED_OPTIONS = {
    "use_dora": "DoRA (use_dora)",
    "modules_to_save": "modules_to_save (full weights of whole modules)",
    "alpha_pattern": "a per-module lora_alpha (alpha_pattern)",
    "lora_bias": "lora_bias",
    "layer_replication": "layer_replication",
    "target_parameters": "LoRA on parameters (target_parameters)",
    "trainable_token_indices": "trainable tokens (trainable_token_indices)",
    "alora_invocation_tokens": "activated LoRA (alora_invocation_tokens)",
    "arrow_config": "Arrow routing (arrow_config)",
    "use_qalora": "QA-LoRA (use_qalora)",
    "use_bdlora": "block-diagonal LoRA (use_bdlora)",
    "kasa_config": "KaSA (kasa_config)",
    "monteclora_config": "MonteCLoRA (monteclora_config)",
    "velora_config": "VeLoRA (velora_config)",
    "megatron_config": "Megatron layers (megatron_config)",
    "loftq_config": "LoftQ (loftq_config: made for a quantized base)",
}
# initialisations that change the base weights too: the adapter is then a task vector of another base
_MODIFIED_BASE = ("pissa", "olora", "corda", "loftq", "lora_ga")


def is_adapter(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding an adapter's config (PEFT's layout); a folder that holds a whole
    checkpoint as well is refused as ambiguous (transformers would load the adapter's base with it)."""
    folder = Path(path)
    if not (folder.is_dir() and os.path.lexists(folder / CONFIG_NAME)):
        return False
    weights = [name for name in (SINGLE_NAME, INDEX_NAME) if os.path.lexists(folder / name)]
    if weights:
        raise CheckpointError(
            f"{folder}: holds both an adapter ({CONFIG_NAME}) and a checkpoint ({weights[0]}); refused as "
            f"ambiguous. Give {folder / weights[0]} for the checkpoint, or move the adapter to a folder of its own"
        )
    return True


@dataclass(frozen=True)
class Factors:
    """One target module: ΔW = scale · B·A, stored transposed (ΔWᵀ) where ``transposed``."""

    module: str
    a: TensorInfo  # lora_A.weight, r × in
    b: TensorInfo  # lora_B.weight, out × r
    scale: float
    transposed: bool


class Adapter:
    """A PEFT LoRA adapter folder, checked against the base checkpoint; ``targets[key]``: the factors of the base
    tensor ``key``. ``path``, ``files`` and ``folder`` as a ``Checkpoint`` has them."""

    def __init__(self, path: str | Path, base: Checkpoint) -> None:
        self.path = self.folder = Path(path)
        config = self._config()
        weights = self.path / WEIGHTS_NAME
        if not os.path.lexists(weights):
            pickles = sorted(p.name for p in self.path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
            hint = f" (only {pickles[0]}: a pickle, refused; convert it to safetensors)" if pickles else ""
            raise CheckpointError(f"{self.path}: an adapter without {WEIGHTS_NAME}{hint}")
        self.files = [weights]
        tensors = read_header(weights)
        fan_in_fan_out = bool(config.get("fan_in_fan_out", False))
        alpha, rslora = config.get("lora_alpha", 8), bool(config.get("use_rslora", False))
        if not isinstance(alpha, int | float) or isinstance(alpha, bool) or not math.isfinite(alpha):
            raise CheckpointError(f"{self.path / CONFIG_NAME}: lora_alpha {alpha!r} is not a number")
        parts: dict[str, dict[str, TensorInfo]] = {}
        for key, info in tensors.items():
            match = _KEY.match(key)
            if match is None:
                what = next((name for frag, name in _NOT_LORA.items() if frag in key), "not a LoRA factor")
                raise CheckpointError(f"{weights}: key {key!r}: {what}; refused, only plain LoRA is merged")
            parts.setdefault(match["module"], {})[match["which"]] = info
        self.targets: dict[str, Factors] = {}
        for module, ab in parts.items():
            self._target(base, module, ab, alpha, rslora, fan_in_fan_out)
        if not self.targets:
            raise CheckpointError(f"{weights}: holds no LoRA factor")

    def _config(self) -> dict:
        file = self.path / CONFIG_NAME
        try:
            config = json.loads(file.read_text(encoding="utf-8"))
        except OSError as err:
            raise CheckpointError(f"{file}: cannot read ({err.strerror})") from None
        except ValueError as err:
            raise CheckpointError(f"{file}: not JSON ({err})") from None
        if not isinstance(config, dict):
            raise CheckpointError(f"{file}: not a JSON object")
        kind = config.get("peft_type", "LORA")
        if str(kind).upper() != "LORA":
            raise CheckpointError(f"{file}: a {kind} adapter; refused, only plain LoRA is merged")
        for option, name in _REFUSED_OPTIONS.items():
            if config.get(option):
                raise CheckpointError(f"{file}: {name}; refused, only plain LoRA is merged")
        init = config.get("init_lora_weights")
        if isinstance(init, str) and init.lower().startswith(_MODIFIED_BASE):
            raise CheckpointError(
                f"{file}: init_lora_weights {init!r} changes the base weights as well: made for a modified base; "
                "refused (convert it to a plain LoRA of the original base first)"
            )
        return config

    def _target(self, base: Checkpoint, module: str, ab: dict, alpha: float, rslora: bool, fifo: bool) -> None:
        where = f"{self.path}: module {module!r}"
        if set(ab) != {"A", "B"}:
            raise CheckpointError(
                f"{where} has lora_{'A' if 'A' in ab else 'B'} but not lora_{'B' if 'A' in ab else 'A'}"
            )
        a, b = ab["A"], ab["B"]
        if len(a.shape) != 2 or len(b.shape) != 2:
            raise CheckpointError(f"{where}: factors of shapes {a.shape} and {b.shape}; only matrices (no conv LoRA)")
        if a.dtype not in FLOAT_DTYPES or b.dtype not in FLOAT_DTYPES:
            raise CheckpointError(f"{where}: factors of dtypes {a.dtype} and {b.dtype}, not float")
        r = a.shape[0]
        if r < 1 or b.shape[1] != r:
            raise CheckpointError(f"{where}: lora_A {a.shape} and lora_B {b.shape} do not share a rank")
        key = module + ".weight"
        info = base.tensors.get(key)
        if info is None:
            raise CheckpointError(f"{where}: the base {base.path} has no tensor {key!r}; not this adapter's base")
        shape = (a.shape[1], b.shape[0]) if fifo else (b.shape[0], a.shape[1])
        if info.shape != shape or info.dtype not in FLOAT_DTYPES:
            raise CheckpointError(
                f"{where}: the base's {key!r} is {info.dtype} {info.shape}, the adapter's B·A{'ᵀ' if fifo else ''} "
                f"is {shape}; not this adapter's base"
            )
        scale = alpha / math.sqrt(r) if rslora else alpha / r
        self.targets[key] = Factors(module, a, b, scale, fifo)

    def __repr__(self) -> str:
        return f"Adapter({str(self.path)!r}, {len(self.targets)} target modules)"
