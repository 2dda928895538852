"""tvutils.editing.streaming (``python -m tvutils merge``): every defect of its first review, reproduced, then the fuzz test.

Each test writes the odd files it needs: safetensors files written byte by byte (``_raw``), malformed headers,
concurrent and killed merges, an OUT that is an input's index, a full or read-only filesystem (a small tmpfs
where this machine lets root mount one, a write hook otherwise).
"""

import errno
import json
import math
import os
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from tests.editing.sharded import write_sharded
from tvutils.__main__ import main
from tvutils.editing import dtype_codec, publish, streaming
from tvutils.editing.checkpoint import DTYPE_NAMES, Checkpoint, CheckpointError, read_header
from tvutils.editing.streaming import clean_leftovers, merge_checkpoints

ROOT = Path(__file__).resolve().parents[2]


def _raw(path, tensors, header_len=None, mutate=None, extra=b"", order=None, pad=0):
    """A safetensors file written by hand: header padded to ``header_len`` bytes, ``mutate``d, ``extra`` appended."""
    header, data, offset = {}, [], 0
    for key in order or list(tensors):
        t = tensors[key]
        raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[key] = {
            "dtype": DTYPE_NAMES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        data.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    if mutate is not None:
        header = mutate(header)
    text = json.dumps(header).encode() + b" " * pad
    if header_len is not None:
        assert header_len >= len(text)
        text += b" " * (header_len - len(text))
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(data) + extra)
    return path


def _models(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    base = {"w": torch.randn(8, 6, generator=g).to(dtype), "b": torch.randn(6, generator=g).to(dtype)}
    tuned = {
        k: (v.double() + 0.05 * torch.randn(v.shape, generator=g, dtype=torch.float64)).to(dtype)
        for k, v in base.items()
    }
    return base, tuned


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def _refused(tmp_path, base, tuned, match, out="out.safetensors", **kw):
    """The merge raises CheckpointError matching ``match`` and leaves the folder as it was (no output, no tmp)."""
    before = _listing(tmp_path)
    with pytest.raises(CheckpointError, match=match) as info:
        merge_checkpoints(base, tuned, [1.0] * len(tuned), tmp_path / out, **kw)
    assert "\n" not in str(info.value)
    assert _listing(tmp_path) == before
    return str(info.value)


def _library_refuses(path):
    try:
        with safe_open(path, "pt") as f:
            for k in f.keys():
                f.get_tensor(k)
    except (SafetensorError, ValueError, RuntimeError, OSError):
        return True
    return False


# ---- 1. a header length whose first byte is 0x80 is a safetensors file, not a pickle ------------------------------
def test_header_length_ending_in_0x80_is_not_a_pickle(tmp_path):
    base, tuned = _models()
    bp = _raw(tmp_path / "base.safetensors", base, header_len=0x180)
    tp = _raw(tmp_path / "tuned.safetensors", tuned, header_len=0x280)
    assert bp.read_bytes()[0] == 0x80 and tp.read_bytes()[:2] == b"\x80\x02"  # even "\x80\x02", a pickle's start
    out = merge_checkpoints(bp, [tp], [1.0], tmp_path / "out.safetensors")
    torch.testing.assert_close(load_file(out)["w"], tuned["w"])
    torch.save(base, tmp_path / "real.safetensors")  # a real torch.save file under that name is still refused
    _refused(tmp_path, bp, [tmp_path / "real.safetensors"], "pickle", out="o.safetensors")
    (tmp_path / "stream.safetensors").write_bytes(b"\x80\x04\x95" + bytes(40))  # a raw pickle stream
    _refused(tmp_path, bp, [tmp_path / "stream.safetensors"], "pickle", out="o.safetensors")


# ---- 4. malformed headers: refused with one line before any output exists, as the safetensors library refuses them -
def _offsets(key, value):
    def mutate(h):
        h[key]["data_offsets"] = value
        return h

    return mutate


def _field(key, field, value):
    def mutate(h):
        if value is KeyError:
            del h[key][field]
        else:
            h[key][field] = value
        return h

    return mutate


MALFORMED = {
    "negative dim": (_field("w", "shape", [-1, 4]), "non-negative integers"),
    "negative begin": (_offsets("w", [-8, 184]), "non-negative"),
    "overlap": (_offsets("b", [160, 184]), "overlaps|gap|span"),
    "size not shape x dtype": (_offsets("b", [192, 210]), "span"),
    "float offsets": (_offsets("w", [0.0, 192.0]), "integers"),
    "shape not a list": (_field("w", "shape", 48), "shape"),
    "bool in shape": (_field("w", "shape", [True, 48]), "shape"),
    "entry not an object": (lambda h: {**h, "w": [1, 2]}, "not an object"),
    "no data_offsets": (_field("w", "data_offsets", KeyError), "data_offsets"),
    "no shape": (_field("w", "shape", KeyError), "shape"),
    "reversed offsets": (_offsets("w", [192, 0]), "end before"),
    "unknown dtype": (_field("w", "dtype", "F31"), "dtype"),
    "dtype not a string": (_field("w", "dtype", 32), "dtype"),
    "gap": (_offsets("b", [200, 224]), "gap|past the end"),
    "past the end": (
        lambda h: _offsets("b", [192, 240])(_field("b", "shape", [12])(h)),
        "past the end|gap|bytes after",
    ),
    "header is a list": (lambda h: [h], "does not start with"),
    "metadata not strings": (lambda h: {**h, "__metadata__": {"format": 1}}, "__metadata__"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_header_refused_like_the_library(tmp_path, case):
    base, tuned = _models()
    bp = _raw(tmp_path / "base.safetensors", base)
    mutate, match = MALFORMED[case]
    bad = _raw(tmp_path / "bad.safetensors", tuned, mutate=mutate)
    assert _library_refuses(bad), case  # the safetensors library refuses it too
    _refused(tmp_path, bp, [bad], match)
    _refused(tmp_path, bad, [bp], match, out="o.safetensors")  # as the base as well


def test_other_framing_errors_refused(tmp_path):
    base, tuned = _models()
    bp = _raw(tmp_path / "base.safetensors", base)
    cases = {
        "trailing bytes": (_raw(tmp_path / "t1.safetensors", tuned, extra=b"\0" * 8), "bytes after the last tensor"),
        "length beyond file": (tmp_path / "t2.safetensors", "exceeds the file"),
        "not a brace": (tmp_path / "t3.safetensors", "does not start"),
        "too short": (tmp_path / "t4.safetensors", "too short"),
        "not json": (tmp_path / "t5.safetensors", "unreadable header"),
        "duplicate key": (tmp_path / "t6.safetensors", "twice"),
    }
    (tmp_path / "t2.safetensors").write_bytes(struct.pack("<Q", 10_000) + b"{}")
    (tmp_path / "t3.safetensors").write_bytes(struct.pack("<Q", 2) + b"[]")
    (tmp_path / "t4.safetensors").write_bytes(b"\x02\0")
    (tmp_path / "t5.safetensors").write_bytes(struct.pack("<Q", 4) + b"{abc")
    good = _raw(tmp_path / "g.safetensors", tuned).read_bytes()
    n = struct.unpack("<Q", good[:8])[0]
    text = good[8 : 8 + n].decode()
    dup = text[:-1] + ', "w": ' + json.dumps(json.loads(text)["w"]) + "}"
    (tmp_path / "t6.safetensors").write_bytes(struct.pack("<Q", len(dup)) + dup.encode() + good[8 + n :])
    (tmp_path / "g.safetensors").unlink()
    for name, (path, match) in cases.items():
        if name != "duplicate key":  # the library keeps the last of two equal keys; a merge cannot guess
            assert _library_refuses(path), name
        _refused(tmp_path, bp, [path], match)


# ---- 5. the arithmetic: fp32 for every dtype, BASE + Σλ(A − BASE), rounded once; --dtype -----------------------
def _exact(base, tuneds, lambdas):
    return base.double() + sum(lam * (t.double() - base.double()) for lam, t in zip(lambdas, tuneds))


def test_bf16_fp16_merged_in_fp32_rounded_once(tmp_path):
    g = torch.Generator().manual_seed(3)
    lambdas = [0.7, -0.4, 0.3]
    for dtype in (torch.bfloat16, torch.float16):
        base = torch.randn(400, 250, generator=g)
        tuneds = [(base + 0.02 * torch.randn(base.shape, generator=g)).to(dtype) for _ in lambdas]
        base = base.to(dtype)
        paths = [_raw(tmp_path / f"{dtype}-{i}.safetensors", {"w": t}) for i, t in enumerate([base, *tuneds])]
        out = merge_checkpoints(paths[0], paths[1:], lambdas, tmp_path / f"{dtype}-out.safetensors")
        merged, exact = load_file(out)["w"], _exact(base, tuneds, lambdas)
        wrong = (merged != exact.to(dtype)).float().mean().item()  # vs the correctly rounded merge
        assert merged.dtype == dtype and wrong < 1e-3, (dtype, wrong)  # 18.6 % before (bf16)
        as32 = merge_checkpoints(paths[0], paths[1:], lambdas, tmp_path / f"{dtype}-32.safetensors", dtype="float32")
        wide = load_file(as32)["w"]
        assert wide.dtype == torch.float32 and torch.equal(wide.to(dtype), merged)  # rounded once, from fp32
        torch.testing.assert_close(wide.double(), exact, rtol=0, atol=2e-6)


def test_fp32_difference_form_keeps_the_task_vector_exact(tmp_path):
    """OUT − BASE = Σλ(A − BASE) to within half an ulp of OUT: the form (1 − Σλ)·BASE + Σλ·A is not."""
    g = torch.Generator().manual_seed(4)
    base = torch.randn(200_000, generator=g)
    tuneds = [base + 1e-3 * torch.randn(base.shape, generator=g) for _ in range(2)]
    paths = [_raw(tmp_path / f"{i}.safetensors", {"w": t}) for i, t in enumerate([base, *tuneds])]
    out = load_file(merge_checkpoints(paths[0], paths[1:], [1.0, -0.6], tmp_path / "out.safetensors"))["w"]
    exact = _exact(base, tuneds, [1.0, -0.6])
    big = torch.maximum(out.abs(), base.abs())
    ulp = torch.nextafter(big, torch.tensor(float("inf"))).double() - big.double()
    # the correctly rounded value almost everywhere (99.9 % here; the form (1 − Σλ)·B + Σλ·A: 53 %), and a mean
    # error of a quarter of an ulp (that form: 0.55)
    assert (out == exact.float()).float().mean() > 0.99
    assert float(((out.double() - exact).abs() / ulp).mean()) < 0.3
    to_bf16 = merge_checkpoints(paths[0], paths[1:], [1.0, -0.6], tmp_path / "o16.safetensors", dtype="bfloat16")
    assert torch.equal(load_file(to_bf16)["w"], out.to(torch.bfloat16))


def _specials(dtype):
    """Random values over float32's range plus the edge cases of rounding to ``dtype``: each of its values and
    each tie between neighbours, the largest finite values and the first that overflow, subnormals, signed zeros,
    Inf, NaN."""
    g = torch.Generator().manual_seed(5)
    info = torch.finfo(dtype)
    wide = torch.randn(50_000, generator=g) * torch.logspace(-40, 38, 50_000)
    near = torch.tensor([info.max, info.tiny, info.smallest_normal / 3, info.eps, 1.0, 65504.0, 65519.0, 65520.0])
    near = torch.cat([near, near.nextafter(torch.tensor(math.inf)), near.nextafter(torch.tensor(-math.inf))])
    bits = torch.arange(2 ** (8 * dtype.itemsize), dtype=torch.int32)  # every value of dtype, exactly
    every = (bits.to(torch.int16) if dtype.itemsize == 2 else bits.to(torch.uint8)).view(dtype).float()
    every = every[every.isfinite()].unique()  # sorted
    ties = ((every[1:].double() + every[:-1].double()) / 2).float()  # halfway between neighbours: exact in fp32
    special = torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan, -math.nan, 3.4e38, -3.4e38, 3.3961514e38, 1e-45])
    return torch.cat([wide, near, -near, every, ties, special])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float8_e4m3fn, torch.float8_e5m2])
def test_dtype_codecs_round_like_torch(dtype):
    """The plain merge rounds with numpy (no torch import: a second or two) exactly as torch does."""
    import numpy as np

    values = _specials(dtype)
    name = DTYPE_NAMES[dtype]
    for work in (torch.float32, torch.float64):
        v = values.to(work)
        raw = np.empty(v.numel() * dtype.itemsize, dtype=np.uint8)
        dtype_codec.encode(v.numpy(), name, raw, np.empty(v.numel(), dtype=np.uint32))
        ours = torch.from_numpy(raw).view(dtype).float()
        theirs = v.to(dtype).float() if work == torch.float32 else v.float().to(dtype).float()
        nan = theirs.isnan()
        assert torch.equal(ours.isnan(), nan), dtype
        assert torch.equal(ours[~nan], theirs[~nan]), dtype  # to nearest, ties to even; Inf where torch has it
        assert torch.equal(ours[~nan].signbit(), theirs[~nan].signbit())  # signed zeros
        back = np.empty(v.numel(), dtype=np.float32 if work == torch.float32 else np.float64)
        decoded = torch.from_numpy(dtype_codec.decode(raw, name, back))
        assert decoded.dtype == work and torch.equal(decoded.float().nan_to_num(7.0), ours.nan_to_num(7.0))
    nan = np.array([np.nan, -np.nan], dtype=np.float32)
    raw = np.empty(4, dtype=np.uint8)
    dtype_codec.encode(nan, "BF16", raw, np.empty(2, dtype=np.uint32))
    assert raw.view(np.uint16).tolist() == [0x7FC0, 0xFFC0]  # quiet NaNs of the value's sign


def test_float8_checkpoints_merge_in_fp32(tmp_path):
    g = torch.Generator().manual_seed(6)
    for dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        base = torch.randn(300, 7, generator=g)
        tuned = (base + 0.3 * torch.randn(base.shape, generator=g)).to(dtype)
        base = base.to(dtype)
        paths = [_raw(tmp_path / f"{dtype}-{i}.safetensors", {"w": t}) for i, t in enumerate([base, tuned])]
        out = load_file(merge_checkpoints(paths[0], paths[1:], [0.5], tmp_path / f"{dtype}-out.safetensors"))["w"]
        expected = (base.float() + 0.5 * (tuned.float() - base.float())).to(dtype)
        assert out.dtype == dtype and torch.equal(out.float(), expected.float())


def test_plain_merge_does_not_import_torch(tmp_path):
    """``import torch`` costs a second or two (more than reading and writing a 1 GB checkpoint): the plain merge
    of every numpy-representable dtype works without it, bfloat16 included."""
    base, tuned = _models(dtype=torch.bfloat16)
    paths = [_raw(tmp_path / f"{i}.safetensors", m) for i, m in enumerate([base, tuned])]
    code = (
        "import sys; from tvutils.__main__ import main; "
        f"rc = main(['merge', '--base', {str(paths[0])!r}, '--finetuned', {str(paths[1])!r}, '--lambdas', '0.5', "
        f"'--out', {str(tmp_path / 'out.safetensors')!r}, '--quiet', '--dtype', 'float16']); "
        "print(rc, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.split() == ["0", "False"], done.stdout + done.stderr
    out = load_file(tmp_path / "out.safetensors")
    for k in base:
        expected = (base[k].float() + 0.5 * (tuned[k].float() - base[k].float())).half()
        assert torch.equal(out[k], expected)


# ---- 7. bad numbers ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lam", [float("nan"), float("inf"), -float("inf"), 1e39])
def test_nonfinite_lambda_refused(tmp_path, lam):
    base, tuned = _models()
    bp, tp = _raw(tmp_path / "b.safetensors", base), _raw(tmp_path / "t.safetensors", tuned)
    with pytest.raises(CheckpointError, match="not a finite"):
        merge_checkpoints(bp, [tp], [lam], tmp_path / "o.safetensors")
    assert not (tmp_path / "o.safetensors").exists()


def test_nonfinite_lambda_refused_by_the_cli(tmp_path, capsys):
    base, tuned = _models()
    bp, tp = _raw(tmp_path / "b.safetensors", base), _raw(tmp_path / "t.safetensors", tuned)
    with pytest.raises(SystemExit) as info:
        main(["merge", "--base", str(bp), "--finetuned", str(tp), "--lambdas", "nan", "--out", str(tmp_path / "o")])
    assert info.value.code == 2 and "not a finite number" in capsys.readouterr().err
    assert (
        main(["merge", "--base", str(bp), "--finetuned", str(tp), "--lambdas", "1e39", "--out", str(tmp_path / "o")])
        == 2
    )
    assert "not a finite float32" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_nonfinite_inputs_reported_by_key(tmp_path):
    base, tuned = _models()
    bp = _raw(tmp_path / "b.safetensors", base)
    for value in (float("nan"), float("inf")):
        bad = {**tuned, "b": tuned["b"].clone()}
        bad["b"][3] = value
        tp = _raw(tmp_path / "t.safetensors", bad)
        msg = _refused(tmp_path, bp, [tp], r"t.safetensors: tensor 'b' holds non-finite values \(first at flat index 3")
        assert "--allow-nonfinite" in msg
        out = merge_checkpoints(bp, [tp], [1.0], tmp_path / "o.safetensors", allow_nonfinite=True, overwrite=True)
        assert not torch.isfinite(load_file(out)["b"][3])
        merge_checkpoints(
            bp, [tp], [1.0], tmp_path / "o.safetensors", allow_nonfinite=True, overwrite=True, keep_entries=0.5
        )
        _refused(tmp_path, bp, [tp], "non-finite", out="v.safetensors", rank=1)
    big = _raw(tmp_path / "big.safetensors", {k: v * 1e5 for k, v in tuned.items()})
    _refused(tmp_path, bp, [big], "tensor 'w' overflows", out="x.safetensors", dtype="float16")  # > 65504
    with pytest.raises(CheckpointError, match="overflows"):
        merge_checkpoints(bp, [big], [1e36], tmp_path / "x.safetensors")  # a finite λ, an infinite result
    assert not (tmp_path / "x.safetensors").exists()


# ---- 2. no output clobbered: exclusive publication ------------------------------------------------------------
def test_output_that_appears_meanwhile_is_not_replaced(tmp_path):
    base, tuned = _models()
    bp = _raw(tmp_path / "b.safetensors", base, header_len=None)
    folder = tmp_path / "sharded"
    folder.mkdir()
    save_file(base, folder / "model-1.safetensors")
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {k: "model-1.safetensors" for k in base}})
    )
    tp = _raw(tmp_path / "t.safetensors", tuned)
    for src, out, intruder in ((bp, tmp_path / "o.safetensors", "file"), (folder, tmp_path / "o_dir", "dir")):

        def appear(msg, out=out, intruder=intruder):  # another process creates OUT while this merge runs
            if intruder == "file":
                out.write_text("someone else's")
            else:
                out.mkdir()

        tuned_src = tp if src == bp else folder
        with pytest.raises(CheckpointError, match="appeared while this merge ran"):
            merge_checkpoints(src, [tuned_src], [0.5], out, log=appear)
        if intruder == "file":
            assert out.read_text() == "someone else's"
        else:
            assert out.is_dir() and not any(out.iterdir())
        assert not [p for p in tmp_path.iterdir() if ".tvmerge-" in p.name]


_SLOW_MERGE = """
import sys, time
sys.path.insert(0, {root!r})
from tvutils.__main__ import install_signal_handlers
from tvutils.editing.streaming import merge_checkpoints
install_signal_handlers()
def log(msg):
    print("READY", flush=True)
    time.sleep({sleep})
try:
    merge_checkpoints({base!r}, [{tuned!r}], [1.0], {out!r}, log=log)
except BaseException as err:
    print("ERROR", type(err).__name__, err, flush=True)
    sys.exit(3)
print("DONE", flush=True)
"""


def _start(tmp_path, base, tuned, out, sleep):
    script = _SLOW_MERGE.format(root=str(ROOT), base=str(base), tuned=str(tuned), out=str(out), sleep=sleep)
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _sharded(folder, sd, shards=2):
    return write_sharded(folder, sd, shards)


def test_two_concurrent_merges_into_one_out(tmp_path):
    base, tuned = _models()
    bp, tp = _sharded(tmp_path / "base", base), _sharded(tmp_path / "tuned", tuned)
    out = tmp_path / "out"
    procs = [_start(tmp_path, bp, tp, out, sleep=0.8) for _ in range(2)]  # both pass their checks, then wait
    results = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 3], results
    loser = next(r for r, p in zip(results, procs) if p.returncode == 3)[0]
    assert "appeared while this merge ran" in loser or "exists" in loser
    assert Checkpoint(out).sharded and not [p for p in tmp_path.iterdir() if ".tvmerge-" in p.name]


# ---- 6. leftovers: SIGTERM and SIGHUP clean up; SIGKILL leaves one that the next run removes ----------------------
def test_killed_merge_leftover_is_removed_by_the_next_run(tmp_path):
    base, tuned = _models()
    bp, tp = _sharded(tmp_path / "base", base), _sharded(tmp_path / "tuned", tuned)
    out = tmp_path / "out"
    for sig, left in ((signal.SIGTERM, False), (signal.SIGHUP, False), (signal.SIGKILL, True)):
        proc = _start(tmp_path, bp, tp, out, sleep=60)
        assert proc.stdout.readline().strip() == "READY"  # the first shard is written, the merge is mid-way
        leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".out.tvmerge-")]
        assert len(leftovers) == 1 and clean_leftovers(out) == []  # a live merge's temporary output is kept
        proc.send_signal(sig)
        proc.communicate(timeout=60)
        assert not out.exists()
        assert bool([p for p in tmp_path.iterdir() if ".tvmerge-" in p.name]) == left, sig
    messages = []
    merge_checkpoints(bp, [tp], [1.0], out, log=messages.append)
    assert any("leftover of a merge that was killed" in m for m in messages)
    assert not [p for p in tmp_path.iterdir() if ".tvmerge-" in p.name] and Checkpoint(out).sharded


# ---- 3. inputs never destroyed; --overwrite replaces only what the merge writes ----------------------------------
def test_out_that_is_an_input_index_or_config_is_refused(tmp_path):
    base, tuned = _models()
    bp, tp = _sharded(tmp_path / "base", base), _sharded(tmp_path / "tuned", tuned)
    for out in (tp / "model.safetensors.index.json", bp / "config.json", tp, tmp_path, bp / "sub" / "x.safetensors"):
        before = {p: p.read_bytes() for p in (*bp.iterdir(), *tp.iterdir())}
        with pytest.raises(CheckpointError, match="would overwrite the input|inside the input|holds the input"):
            merge_checkpoints(bp, [tp], [1.0], out, overwrite=True)
        assert {p: p.read_bytes() for p in (*bp.iterdir(), *tp.iterdir())} == before


def test_overwrite_replaces_only_what_the_merge_writes(tmp_path):
    base, tuned = _models()
    bp, tp = _sharded(tmp_path / "base", base), _sharded(tmp_path / "tuned", tuned)
    out = tmp_path / "out"
    merge_checkpoints(bp, [tp], [1.0], out)
    (out / "notes.txt").write_text("mine")
    merge_checkpoints(bp, [tp], [0.5], out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert _listing(out) == sorted([*_listing(bp), "notes.txt"])
    (out / "stray.safetensors").write_bytes(b"x")  # a weight file this merge does not write: refused, kept
    with pytest.raises(CheckpointError, match="weight files this merge would not replace.*stray"):
        merge_checkpoints(bp, [tp], [0.5], out, overwrite=True)
    assert (out / "stray.safetensors").read_bytes() == b"x"
    afile = tmp_path / "afile"
    afile.write_text("a file")
    with pytest.raises(CheckpointError, match="is a file, and this merge writes a folder"):
        merge_checkpoints(bp, [tp], [0.5], afile, overwrite=True)
    assert afile.read_text() == "a file"
    adir = tmp_path / "adir.safetensors"
    adir.mkdir()
    single = _raw(tmp_path / "s.safetensors", base)
    with pytest.raises(CheckpointError, match="not a regular file"):
        merge_checkpoints(single, [_raw(tmp_path / "t.safetensors", tuned)], [1.0], adir, overwrite=True)
    assert adir.is_dir()


# ---- 8. OS errors: one line naming the path and the cause ----------------------------------------------------------
def _mount(where, options):
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    return done.returncode == 0


def _umount(where):
    subprocess.run(["umount", str(where)], capture_output=True)


def _big(tmp_path):
    g = torch.Generator().manual_seed(5)
    base = {"w": torch.randn(256, 256, generator=g)}
    return (
        _raw(tmp_path / "big_base.safetensors", base),
        _raw(tmp_path / "big_tuned.safetensors", {"w": base["w"] + 0.1}),
    )


@pytest.mark.parametrize("cause", ["ENOSPC", "EROFS"])
def test_disk_full_and_read_only_give_one_line(tmp_path, monkeypatch, capsys, cause):
    bp, tp = _big(tmp_path)  # 256 KB each
    where = tmp_path / "mnt"
    options = "size=64k" if cause == "ENOSPC" else "ro,size=64k"
    mounted = os.geteuid() == 0 and not os.environ.get("TVUTILS_TEST_NO_MOUNT") and _mount(where, options)
    if not mounted:  # no small filesystem here: the write hook fails as the full / read-only disk would
        where.mkdir(exist_ok=True)
        code = getattr(errno, cause)

        def failing(*args, **kwargs):
            raise OSError(code, os.strerror(code), str(where / "x"))

        monkeypatch.setattr(publish, "write_all" if cause == "ENOSPC" else "create", failing)
    try:
        args = ["merge", "--base", str(bp), "--finetuned", str(tp), "--lambdas", "1", "--quiet"]
        assert main([*args, "--out", str(where / "out.safetensors")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and os.strerror(getattr(errno, cause)) in err and str(where) in err, err
        assert os.listdir(where) == []
    finally:
        if mounted:
            _umount(where)


def test_other_os_errors_and_out_dot(tmp_path, monkeypatch, capsys):
    bp, tp = _big(tmp_path)
    args = ["merge", "--base", str(bp), "--finetuned", str(tp), "--lambdas", "1"]
    assert main([*args, "--out", str(bp / "out.safetensors")]) == 2  # a parent that is a file
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a folder" in err and str(bp) in err
    monkeypatch.chdir(tmp_path)
    for extra in ([], ["--overwrite"]):  # the folder holds the inputs
        assert main([*args, "--out", ".", *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "output folder holds the input" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert main([*args, "--out", ".", "--overwrite", "--quiet"]) == 0
    assert _listing(empty) == ["model.safetensors"]


# ---- 9. index edge cases ----------------------------------------------------------------------------------------
def test_shards_with_equal_basenames_in_different_folders(tmp_path):
    base, tuned = _models()
    for name, sd in (("base", base), ("tuned", tuned)):
        folder = tmp_path / name
        (folder / "x").mkdir(parents=True)
        (folder / "y").mkdir()
        save_file({"w": sd["w"]}, folder / "x" / "model.safetensors")
        save_file({"b": sd["b"]}, folder / "y" / "model.safetensors")
        index = {"weight_map": {"w": "x/model.safetensors", "b": "y/model.safetensors"}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    out = merge_checkpoints(tmp_path / "base", [tmp_path / "tuned"], [1.0], tmp_path / "out")
    merged = Checkpoint(out)
    assert sorted(merged.shard_names.values()) == ["x/model.safetensors", "y/model.safetensors"]
    assert torch.equal(load_file(out / "x" / "model.safetensors")["w"], tuned["w"])
    assert torch.equal(load_file(out / "y" / "model.safetensors")["b"], tuned["b"])


@pytest.mark.parametrize("where", ["../outside.safetensors", "ABS", "x/../../outside.safetensors"])
def test_index_pointing_outside_its_folder_is_refused(tmp_path, where):
    base, tuned = _models()
    save_file(base, tmp_path / "outside.safetensors")
    folder = tmp_path / "ck"
    folder.mkdir()
    name = str(tmp_path / "outside.safetensors") if where == "ABS" else where
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {k: name for k in base}}))
    _refused(tmp_path, folder, [_raw(tmp_path / "t.safetensors", tuned)], "outside the checkpoint's folder", out="o")


# ---- 10. the variants: exact where they were, in bounded time --------------------------------------------------
def test_variant_merges_equal_the_task_vector_operations_on_large_tensors(tmp_path):
    """keep_entries on a tensor above the selection's sampling size equals variants.entry_mask exactly."""
    from tvutils.editing import variants

    g = torch.Generator().manual_seed(6)
    base = {"big": torch.randn(1100, 1000, generator=g), "v": torch.randn(50, generator=g)}
    tuned = {k: v + torch.randn(v.shape, generator=g).round(decimals=2) for k, v in base.items()}  # many ties
    bp, tp = _raw(tmp_path / "b.safetensors", base), _raw(tmp_path / "t.safetensors", tuned)
    out = load_file(merge_checkpoints(bp, [tp], [0.8], tmp_path / "o.safetensors", keep_entries=0.1))
    for k in base:
        d = tuned[k] - base[k]
        expected = base[k] + 0.8 * (d * variants.entry_mask(d, 0.1))
        torch.testing.assert_close(out[k], expected, rtol=0, atol=1e-6)
    out = load_file(merge_checkpoints(bp, [tp, tp], [0.8, -0.3], tmp_path / "r.safetensors", rank=4))
    d = tuned["big"] - base["big"]
    torch.testing.assert_close(out["big"], base["big"] + 0.5 * variants.rank_k_fast(d, 4), rtol=0, atol=1e-5)
    out = load_file(merge_checkpoints(bp, [tp], [0.8], tmp_path / "e.safetensors", rank=4, keep_rows=0.5))
    low = variants.rank_k_fast(d, 4)
    low = low * variants.row_mask(low, 0.5)[:, None]
    torch.testing.assert_close(out["big"], base["big"] + 0.8 * low, rtol=0, atol=1e-5)


def test_rank_merge_in_row_blocks_equals_rank_k_fast_for_every_shape(tmp_path):
    """The sketch Y formed block by block while Dᵢ is read (tall, wide, and a row longer than a chunk, where it
    is not) and ACC formed in the last pass give rank_k_fast's result; rank then entries as well. One torch
    thread for both (the merge's and the reference's sums then run in the same order: with a row of 262,000
    entries, 1 and 2 threads differ by 2e-4)."""
    from tvutils.editing import variants

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _rank_merge_cases(tmp_path, variants)
    finally:
        torch.set_num_threads(threads)


def _rank_merge_cases(tmp_path, variants):

    g = torch.Generator().manual_seed(7)
    shapes = {"tall": (700, 90), "wide": (40, 900), "long_rows": (20, streaming.CHUNK + 5), "vec": (3000,)}
    base = {k: torch.randn(s, generator=g) for k, s in shapes.items()}

    def update(shape):  # a fine-tuning update: a few strong directions and noise (a decaying spectrum)
        if len(shape) == 1:
            return 0.1 * torch.randn(shape, generator=g)
        u, v = torch.randn(shape[0], 8, generator=g), torch.randn(8, shape[1], generator=g)
        return (u * torch.logspace(0, -2, 8)) @ v / 8 + 1e-3 * torch.randn(shape, generator=g)

    tuned = [{k: v + update(v.shape) for k, v in base.items()} for _ in range(2)]
    bp = _raw(tmp_path / "b.safetensors", base)
    tps = [_raw(tmp_path / f"t{i}.safetensors", t) for i, t in enumerate(tuned)]
    lams = [0.7, -0.4]
    out = load_file(merge_checkpoints(bp, tps, lams, tmp_path / "r.safetensors", rank=5))
    both = load_file(merge_checkpoints(bp, tps, lams, tmp_path / "re.safetensors", rank=5, keep_entries=0.3))
    for k, v in base.items():
        ds = [t[k] - v for t in tuned]
        if v.ndim == 1:  # a vector has no rank: kept whole
            low = ds
        else:
            low = [variants.rank_k_fast(d, 5) for d in ds]
        expected = v + sum(lam * d for lam, d in zip(lams, low))
        torch.testing.assert_close(out[k], expected, rtol=0, atol=2e-5)
        kept = [d * variants.entry_mask(d, 0.3) for d in low]
        # entries after rank: the k-th largest of the low-rank products, which differ in the last bits, so an
        # entry at the threshold may fall either side: at most a few in 10,000 differ
        off = (both[k] - (v + sum(lam * d for lam, d in zip(lams, kept)))).abs() > 2e-5
        assert off.float().mean() < 1e-4, (k, int(off.sum()))


def test_variant_merge_with_many_tensors_keeps_the_file_order(tmp_path):
    """A variant's output tensor is written while the next is computed: every tensor lands at its offset."""
    g = torch.Generator().manual_seed(8)
    base = {f"w{i}": torch.randn(300 + 10 * i, 250, generator=g) for i in range(6)}
    base["ids"] = torch.arange(7)
    tuned = {k: (v + 0.01 * torch.randn(v.shape, generator=g)) if v.is_floating_point() else v for k, v in base.items()}
    bp, tp = _raw(tmp_path / "b.safetensors", base), _raw(tmp_path / "t.safetensors", tuned)
    out = load_file(merge_checkpoints(bp, [tp], [1.0], tmp_path / "o.safetensors", keep_entries=1.0))
    for k in base:
        torch.testing.assert_close(out[k], tuned[k], rtol=0, atol=1e-6)


# ---- acceptance: the fuzz test ---------------------------------------------------------------------------------------
FUZZ_DTYPES = [
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.float64,
    torch.int64,
    torch.int8,
    torch.uint8,
    torch.bool,
]


def _random_model(rng, g):
    tensors = {}
    for i in range(rng.randint(1, 4)):
        dtype = rng.choice(FUZZ_DTYPES)
        shape = [rng.choice([0, 1, 2, 3, 5, 7]) for _ in range(rng.randint(0, 3))]
        if dtype.is_floating_point:
            t = torch.randn(shape, generator=g).to(dtype)
        elif dtype == torch.bool:
            t = torch.randint(0, 2, shape, generator=g).bool()
        else:
            t = torch.randint(0, 100, shape, generator=g).to(dtype)
        tensors[f"t{i}.{rng.choice(['w', 'b', 'weight'])}"] = t
    return tensors


def test_fuzz_valid_files_merge_and_corrupted_files_are_refused(tmp_path):
    rng, g = random.Random(18), torch.Generator().manual_seed(18)
    valid = corrupted = 0
    while valid < 300:
        base = _random_model(rng, g)
        tuned = {k: (v.float() + 0.5).to(v.dtype) if v.is_floating_point() else v for k, v in base.items()}
        order = rng.sample(list(base), len(base))
        bp = _raw(tmp_path / "base.safetensors", base, order=order, pad=rng.choice([0, rng.randrange(600)]))
        tp = _raw(tmp_path / "tuned.safetensors", tuned)
        out = merge_checkpoints(bp, [tp], [rng.uniform(-2, 2)], tmp_path / "out.safetensors", fsync=False)
        assert set(load_file(out)) == set(base) and not _library_refuses(out)
        out.unlink()
        valid += 1
        data = bp.read_bytes()
        n = struct.unpack("<Q", data[:8])[0]
        for _ in range(2):  # two corruptions of each valid file: a flipped byte in the first 8 + n, or a cut
            if rng.random() < 0.6:
                at = rng.randrange(0, 8 + n)
                bad = bytearray(data)
                bad[at] ^= 1 << rng.randrange(8)
                bad = bytes(bad)
            else:
                bad = data[: rng.randrange(0, len(data))]
            cp = tmp_path / "bad.safetensors"
            cp.write_bytes(bad)
            lib = _library_refuses(cp)
            try:
                same = Checkpoint(cp).tensors.keys() == read_header(bp).keys()
                ours = False
            except CheckpointError:
                ours = True
            if lib:  # a corrupted file by the library's rules: refused, before any output exists
                assert ours, (bad[: 8 + n], "accepted")
                with pytest.raises(CheckpointError):
                    merge_checkpoints(bp, [cp], [1.0], tmp_path / "out.safetensors")
                assert _listing(tmp_path) == ["bad.safetensors", "base.safetensors", "tuned.safetensors"]
                corrupted += 1
            else:  # the flip left a valid file (a key renamed, a space made a tab): ours accepts it as well
                assert not ours and same in (True, False)
    assert corrupted >= 300, corrupted


def test_cli_refuses_a_corrupted_file_in_one_line(tmp_path):
    base, tuned = _models()
    bp = _raw(tmp_path / "b.safetensors", base)
    bad = _raw(tmp_path / "t.safetensors", tuned, mutate=_offsets("w", [0, 10]))
    cmd = [sys.executable, "-m", "tvutils", "merge", "--base", str(bp), "--finetuned", str(bad), "--lambdas", "1"]
    start = time.perf_counter()
    done = subprocess.run([*cmd, "--out", str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert "t.safetensors: tensor 'w'" in done.stderr and time.perf_counter() - start < 60
