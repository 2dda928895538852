"""Task vectors: ΔΨ_T = Ψ*_T − Ψ⁽⁰⁾ for the tensors of ANY torch model, and their algebra.

After mlfoundations/task_vectors, with three differences: mismatched keys, shapes or dtypes raise a
``ValueError`` that names the key (nothing is skipped silently), models are passed in memory or loaded from
safe formats only, and the low-rank and sparse variants of the paper's Corollaries 1 and 2 are at hand
(``tvutils.editing.variants``).

Floating-point tensors form the vector. Integer buffers (e.g. position ids) cannot be subtracted: they must be
equal in both models, are listed in ``TaskVector.frozen``, and ``apply_to`` leaves them as the base has them.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

StateDict = Mapping[str, torch.Tensor]


def state_dict_of(model_or_sd: nn.Module | StateDict) -> OrderedDict[str, torch.Tensor]:
    """The detached tensors of a module's state dict, or of a mapping (checked to hold tensors only)."""
    sd = model_or_sd.state_dict() if isinstance(model_or_sd, nn.Module) else model_or_sd
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in sd.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"key {key!r}: expected a tensor, got {type(value).__name__}")
        out[key] = value.detach()
    return out


def check_compatible(a: StateDict, b: StateDict, what: str = "state dicts", check_dtype: bool = True) -> None:
    """Raise ValueError naming the first key missing on one side or differing in shape or dtype."""
    only_a, only_b = [k for k in a if k not in b], [k for k in b if k not in a]
    if only_a or only_b:
        parts = []
        if only_a:
            parts.append(f"only in the first: {only_a[:5]}{' …' if len(only_a) > 5 else ''}")
        if only_b:
            parts.append(f"only in the second: {only_b[:5]}{' …' if len(only_b) > 5 else ''}")
        raise ValueError(f"{what} have different keys; " + "; ".join(parts))
    for key in a:
        if a[key].shape != b[key].shape:
            raise ValueError(f"key {key!r}: shape {tuple(a[key].shape)} vs {tuple(b[key].shape)} in {what}")
        if check_dtype and a[key].dtype != b[key].dtype:
            raise ValueError(f"key {key!r}: dtype {a[key].dtype} vs {b[key].dtype} in {what}")


class TaskVector:
    """A dict of parameter differences with +, −, unary −, scalar *, and ``apply_to``."""

    def __init__(self, deltas: Mapping[str, torch.Tensor], frozen: Iterable[str] = ()) -> None:
        for key, value in deltas.items():
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                raise ValueError(f"key {key!r}: a task vector holds floating-point tensors only")
        self.deltas: OrderedDict[str, torch.Tensor] = OrderedDict((k, v.detach().clone()) for k, v in deltas.items())
        self.frozen: tuple[str, ...] = tuple(frozen)

    # ---- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_models(
        cls,
        pretrained: nn.Module | StateDict,
        finetuned: nn.Module | StateDict,
        include: Callable[[str], bool] | None = None,
    ) -> TaskVector:
        """ΔΨ = finetuned − pretrained over every floating-point tensor (or those whose key ``include`` accepts).

        Keys, shapes and dtypes must match exactly; non-float tensors must be equal.
        """
        base, tuned = state_dict_of(pretrained), state_dict_of(finetuned)
        check_compatible(base, tuned, "pre-trained and fine-tuned models")
        deltas, frozen = OrderedDict(), []
        for key in base:
            if include is not None and not include(key):
                continue
            if base[key].is_floating_point():
                deltas[key] = _difference(tuned[key], base[key])
            else:
                if not torch.equal(base[key], tuned[key]):
                    raise ValueError(
                        f"key {key!r}: non-float tensor differs between the models; it cannot be a task vector entry"
                    )
                frozen.append(key)
        if not deltas:
            raise ValueError("no floating-point tensor selected: the task vector would be empty")
        return cls(deltas, frozen)

    # ---- algebra ------------------------------------------------------------------------------------------
    def _check(self, other: TaskVector) -> None:
        if not isinstance(other, TaskVector):
            raise TypeError(f"expected a TaskVector, got {type(other).__name__}")
        check_compatible(self.deltas, other.deltas, "task vectors")

    def __add__(self, other: TaskVector) -> TaskVector:
        self._check(other)
        return TaskVector({k: v + other.deltas[k] for k, v in self.deltas.items()}, self.frozen)

    def __sub__(self, other: TaskVector) -> TaskVector:
        self._check(other)
        return TaskVector({k: v - other.deltas[k] for k, v in self.deltas.items()}, self.frozen)

    def __neg__(self) -> TaskVector:
        return TaskVector({k: -v for k, v in self.deltas.items()}, self.frozen)

    def __mul__(self, scale: float) -> TaskVector:
        if isinstance(scale, torch.Tensor) and scale.numel() == 1:
            scale = float(scale)
        if not isinstance(scale, (int, float)):
            raise TypeError(f"a task vector is scaled by a number, got {type(scale).__name__}")
        return TaskVector({k: v * scale for k, v in self.deltas.items()}, self.frozen)

    __rmul__ = __mul__

    def __repr__(self) -> str:
        n = sum(v.numel() for v in self.deltas.values())
        return f"TaskVector({len(self.deltas)} tensors, {n:,} numbers, ‖·‖ = {self.norm():.4g})"

    def keys(self) -> list[str]:
        return list(self.deltas)

    # ---- applying -----------------------------------------------------------------------------------------
    def apply_to(self, base: nn.Module | StateDict, scale: float = 1.0) -> nn.Module | OrderedDict[str, torch.Tensor]:
        """Ψ⁽⁰⁾ + scale·ΔΨ. Returns a new module (a deep copy of ``base``) or a new state dict; base is untouched.

        Every key of the task vector must be in the base with the same shape and dtype; the base's other
        tensors (e.g. a frozen head) are kept as they are.
        """
        sd = state_dict_of(base)
        for key, delta in self.deltas.items():
            if key not in sd:
                raise ValueError(f"key {key!r} of the task vector is not in the base model")
            if sd[key].shape != delta.shape:
                raise ValueError(
                    f"key {key!r}: shape {tuple(delta.shape)} in the task vector vs {tuple(sd[key].shape)} in the base"
                )
            if sd[key].dtype != delta.dtype:
                raise ValueError(f"key {key!r}: dtype {delta.dtype} in the task vector vs {sd[key].dtype} in the base")
        new_sd = OrderedDict(
            (k, (v + scale * self.deltas[k]) if k in self.deltas else v.clone()) for k, v in sd.items()
        )
        if isinstance(base, nn.Module):
            model = copy.deepcopy(base)
            model.load_state_dict(new_sd)
            return model
        return new_sd

    # ---- geometry -----------------------------------------------------------------------------------------
    def flatten(self) -> torch.Tensor:
        """All entries as one float64 vector (in key order)."""
        return torch.cat([v.reshape(-1).double() for v in self.deltas.values()])

    def norm(self) -> float:
        """Euclidean (Frobenius) norm over all entries."""
        return float(self.flatten().norm())

    def dot(self, other: TaskVector) -> float:
        self._check(other)
        return float(self.flatten() @ other.flatten())

    def cosine(self, other: TaskVector) -> float:
        """Cosine similarity of two task vectors in parameter space."""
        denom = self.norm() * other.norm()
        if denom == 0:
            raise ValueError("cosine of a zero task vector is undefined")
        return self.dot(other) / denom

    def numel(self) -> int:
        return sum(v.numel() for v in self.deltas.values())


def _difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a − b in a's dtype; half-precision tensors are subtracted in float32 first."""
    if a.dtype in (torch.float16, torch.bfloat16):
        return (a.float() - b.float()).to(a.dtype)
    return a - b


def merge(
    base: nn.Module | StateDict, task_vectors: list[TaskVector], lambdas: list[float]
) -> nn.Module | OrderedDict[str, torch.Tensor]:
    """Task arithmetic: Ψ = Ψ⁽⁰⁾ + Σᵢ λᵢ ΔΨᵢ (a new module or state dict)."""
    if len(task_vectors) != len(lambdas):
        raise ValueError(f"{len(task_vectors)} task vectors but {len(lambdas)} coefficients λ")
    if not task_vectors:
        raise ValueError("merge needs at least one task vector")
    total = lambdas[0] * task_vectors[0]
    for lam, tv in zip(lambdas[1:], task_vectors[1:]):
        total = total + lam * tv
    return total.apply_to(base)
