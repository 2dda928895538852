"""The dtypes of a merge: safetensors bytes decoded to the work dtype and encoded from it, with numpy.

bfloat16 is converted by bit arithmetic (rounded to nearest, ties to even, as torch rounds: tested bit for bit
on every value and tie); float16, float32 and float64 by numpy; only float8 tensors import torch, to convert
them (``import torch`` takes a second or two, as long as the whole plain merge of a 1 GB checkpoint).
"""

from __future__ import annotations

import math

import numpy as np

from .checkpoint import CheckpointError

OUT_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16", "float64": "F64"}
NUMPY = {"F64": np.float64, "F32": np.float32, "F16": np.float16}
_INF_BITS = {"BF16": 0x7F80, "F16": 0x7C00}  # |bits| ≥ these: Inf or NaN


def out_dtype(dtype: str | None) -> str | None:
    """The safetensors name of an output dtype ("float32", "bfloat16", …), None for each tensor's own."""
    if dtype is None:
        return None
    name = OUT_DTYPES.get(str(dtype).removeprefix("torch."), str(dtype).upper())
    if name not in OUT_DTYPES.values():
        raise CheckpointError(f"dtype {dtype!r} is not an output dtype ({', '.join(OUT_DTYPES)})")
    return name


def work_dtype(in_name: str, out_name: str) -> type:
    """float32 for every float dtype; float64 where the input or the output is float64."""
    return np.float64 if "F64" in (in_name, out_name) else np.float32


def _torch_view(raw: np.ndarray, name: str):  # noqa: ANN202 (a float8 tensor; torch imported only here)
    import torch

    from .checkpoint import DTYPES

    return torch.from_numpy(raw).view(DTYPES[name])


def decode(raw: np.ndarray, name: str, out: np.ndarray) -> np.ndarray:
    """The values of ``raw`` (bytes of a float tensor of dtype ``name``) in ``out``'s float dtype, written there."""
    if name == "BF16":  # bfloat16 is the top half of a float32
        if out.dtype == np.float32:
            np.left_shift(raw.view(np.uint16), 16, out=out.view(np.uint32), dtype=np.uint32)
        else:
            out[:] = np.left_shift(raw.view(np.uint16), 16, dtype=np.uint32).view(np.float32)
    elif name in NUMPY:
        np.copyto(out, raw.view(NUMPY[name]))
    else:
        np.copyto(out, _torch_view(raw, name).float().numpy())
    return out


def encode(values: np.ndarray, name: str, raw: np.ndarray, scratch: np.ndarray) -> None:
    """Round ``values`` (float32 or float64) once to dtype ``name``, into the bytes ``raw``, as torch rounds: to
    nearest, ties to even; NaN stays NaN (bfloat16: a quiet NaN with the value's sign and top payload bits).
    ``scratch``: a uint32 buffer at least as long as ``values``."""
    if name == "BF16":
        if values.dtype != np.float32:
            values = values.astype(np.float32)  # as torch does: float64 → float32 → bfloat16
        bits, t = values.view(np.uint32), scratch[: values.size]
        np.right_shift(bits, 16, out=t)
        np.bitwise_and(t, 1, out=t)
        t += 0x7FFF
        t += bits  # no wrap-around: only NaNs lie above 0xFF800000
        np.right_shift(t, 16, out=t)
        out = raw.view(np.uint16)
        np.copyto(out, t, casting="unsafe")
        nan = np.isnan(values)
        if nan.any():
            out[nan] = (bits[nan] >> 16).astype(np.uint16) | 0x40
    elif name in NUMPY:
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow to Inf is reported by the check
            np.copyto(raw.view(NUMPY[name]), values, casting="unsafe")
    else:
        import torch

        _torch_view(raw, name).copy_(torch.from_numpy(values))


def all_finite(values: np.ndarray, name: str) -> bool:
    """Whether every value is finite: ``values`` in a float dtype, or the raw bytes of dtype ``name``."""
    if values.dtype == np.uint8:
        if name in _INF_BITS:
            return int(np.bitwise_and(values.view(np.uint16), 0x7FFF).max(initial=0)) < _INF_BITS[name]
        if name not in NUMPY:
            return bool(_torch_view(values, name).float().isfinite().all())
        values = values.view(NUMPY[name])
    if not values.size:
        return True
    return math.isfinite(float(values.min())) and math.isfinite(float(values.max()))  # NaN propagates
