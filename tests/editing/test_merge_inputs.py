"""``python -m tvutils merge`` on what users hold: hub snapshots, mixed-format folders, scaled FP8, many shards,
special files, and a signal at any moment. Each test uses the public entry points only (``merge_checkpoints``,
the command line), so that it runs as well against the code before these fixes, where each one fails."""

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.editing.sharded import write_sharded
from tvutils.editing.checkpoint import Checkpoint, CheckpointError
from tvutils.editing.streaming import merge_checkpoints

ROOT = Path(__file__).resolve().parents[2]


def _pair(seed=0, shape=(8, 6)):
    g = torch.Generator().manual_seed(seed)
    base = {"w": torch.randn(shape, generator=g), "b": torch.randn(shape[-1], generator=g)}
    return base, {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in base.items()}


def _sharded(folder, sd, shards=2):
    return write_sharded(folder, sd, shards)


def _no_tmp(folder):
    return not [p for p in Path(folder).rglob("*") if ".tvmerge-" in p.name]


# ---- a signal while numba compiles the --keep-entries kernels ------------------------------------------------------
# The merge runs in a child process with a cold numba cache; a thread of that process watches the main thread's
# stack and sends the signal while LLVM generates code (numba's get_function_address / finalize_object), where
# Python's handler would run inside a ctypes callback and its exception be dropped.
_DURING_COMPILE = """
import os, runpy, signal, sys, threading, time
main_id = threading.main_thread().ident
def watch():
    while True:
        f, names = sys._current_frames().get(main_id), set()
        while f is not None:
            names.add(f.f_code.co_name)
            f = f.f_back
        if names & {{"get_function_address", "finalize_object"}}:
            os.kill(os.getpid(), signal.{sig})
            print("SENT", flush=True)
            return
        time.sleep(0.0005)
threading.Thread(target=watch, daemon=True).start()
sys.argv = ["tvutils", "merge", "--base", {base!r}, "--finetuned", {tuned!r}, "--lambdas", "0.5",
            "--keep-entries", "0.1", "--out", {out!r}]
runpy.run_module("tvutils", run_name="__main__")
"""


def test_a_signal_while_the_kernels_compile_interrupts_the_merge(tmp_path):
    base, tuned = _pair(shape=(300, 300))  # above the selection's sampling size: both kernels are used
    save_file(base, tmp_path / "b.safetensors")
    save_file(tuned, tmp_path / "t.safetensors")
    procs = {}
    for sig in ("SIGINT", "SIGTERM", "SIGHUP"):
        out = tmp_path / f"out-{sig}.safetensors"
        script = _DURING_COMPILE.format(
            sig=sig, base=str(tmp_path / "b.safetensors"), tuned=str(tmp_path / "t.safetensors"), out=str(out)
        )
        env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / f"numba-{sig}"), "PYTHONPATH": os.pathsep.join(sys.path)}
        procs[sig] = (
            out,
            subprocess.Popen(
                [sys.executable, "-c", script],
                env=env,
                cwd=tmp_path,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            ),
        )
    for sig, (out, proc) in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert "SENT" in stdout, (sig, stdout, stderr)  # the signal came during the compilation
        assert proc.returncode == 130 and "interrupted" in stderr, (sig, proc.returncode, stderr[-2000:])
        assert "Exception ignored" not in stderr and not out.exists() and _no_tmp(tmp_path), sig


# ---- a folder OUT receives no weights in other formats -------------------------------------------------------------
OTHER_FORMATS = [
    "tf_model.h5",
    "flax_model.msgpack",
    "model.onnx",
    "rust_model.ot",
    "model.tflite",
    "model.gguf",
    "pytorch_model.bin",
    "tf_model.h5.index.json",
]


def test_weights_in_other_formats_are_not_copied(tmp_path):
    base, tuned = _pair()
    folder = tmp_path / "gpt2"
    folder.mkdir()
    save_file(base, folder / "model.safetensors")
    for name in ("config.json", "tokenizer.json", "vocab.txt", "merges.txt", "generation_config.json", *OTHER_FORMATS):
        (folder / name).write_bytes(b"{}" if name.endswith(".json") else b"not the merged weights")
    save_file(tuned, tmp_path / "t.safetensors")
    out = merge_checkpoints(folder, [tmp_path / "t.safetensors"], [1.0], tmp_path / "out")
    listing = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert listing == [
        "config.json",
        "generation_config.json",
        "merges.txt",
        "model.safetensors",
        "tokenizer.json",
        "vocab.txt",
    ], listing
    torch.testing.assert_close(load_file(out)["w"], tuned["w"])


# ---- block-scaled FP8: refused (the codes and the scales each merged on their own are not a merged weight) -------
def test_block_scaled_float8_is_refused(tmp_path):
    g = torch.Generator().manual_seed(1)
    cks = []
    for i in range(2):
        w = torch.randn(256, 256, generator=g)
        scale = w.reshape(2, 128, 2, 128).abs().amax(dim=(1, 3)) / 448.0  # one per 128×128 block, as DeepSeek-V3
        codes = (w / scale.repeat_interleave(128, 0).repeat_interleave(128, 1)).to(torch.float8_e4m3fn)
        path = tmp_path / f"fp8-{i}.safetensors"
        save_file({"layer.weight": codes, "layer.weight_scale_inv": scale, "norm": torch.ones(256)}, path)
        cks.append(path)
    with pytest.raises(CheckpointError, match="scaled float8.*weight_scale_inv") as info:
        merge_checkpoints(cks[0], cks[1:], [0.5], tmp_path / "out.safetensors")
    assert "\n" not in str(info.value) and not (tmp_path / "out.safetensors").exists()
    folder = _sharded(tmp_path / "quant", {"w": torch.ones(4, 4), "b": torch.ones(4)})  # a config that says so
    (folder / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "fp8"}}))
    with pytest.raises(CheckpointError, match="quantization_config.*fp8"):
        merge_checkpoints(folder, [folder / "model.safetensors.index.json"], [0.5], tmp_path / "out2")


# ---- the Hugging Face hub cache: snapshots/<rev>/ files link to ../../blobs/<hash> ---------------------------------
def _hub(root, repo, sd):
    """A hub cache entry: the files live in blobs/ and the snapshot holds relative links to them."""
    built = _sharded(root / "build" / repo, sd)
    snap = root / "hub" / f"models--org--{repo}" / "snapshots" / "0123abc"
    blobs = root / "hub" / f"models--org--{repo}" / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir()
    for i, f in enumerate(sorted(built.iterdir())):
        (blobs / f"{repo}{i:040d}").write_bytes(f.read_bytes())
        (snap / f.name).symlink_to(Path("../../blobs") / f"{repo}{i:040d}")
    return snap


def test_a_sharded_hub_cache_snapshot_merges(tmp_path):
    base, tuned = _pair()
    bs, ts = _hub(tmp_path, "base", base), _hub(tmp_path, "tuned", tuned)
    before = {p: p.read_bytes() for p in (tmp_path / "hub").rglob("*") if p.is_file()}
    out = merge_checkpoints(bs, [ts], [0.5], tmp_path / "out")
    merged = Checkpoint(out)
    assert merged.sharded and all(p.is_file() and not p.is_symlink() for p in out.iterdir())  # real files
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in bs.iterdir())
    for key in base:
        expected = base[key] + 0.5 * (tuned[key] - base[key])
        torch.testing.assert_close(load_file(merged.tensors[key].file)[key], expected)
    assert {p: p.read_bytes() for p in (tmp_path / "hub").rglob("*") if p.is_file()} == before  # inputs untouched
    assert all(p.is_symlink() for p in bs.iterdir())
    stray = tmp_path / "elsewhere.safetensors"  # a link out of the snapshot, not into its blobs: still refused
    stray.write_bytes(next(bs.glob("model-00001*")).read_bytes())
    (ts / "model-00001-of-00002.safetensors").unlink()
    (ts / "model-00001-of-00002.safetensors").symlink_to(stray)
    with pytest.raises(CheckpointError, match="links outside the checkpoint's folder"):
        merge_checkpoints(bs, [ts], [0.5], tmp_path / "out2")


# ---- a folder holding both model.safetensors and an index -----------------------------------------------------------
def test_a_folder_with_both_a_single_file_and_an_index_is_refused(tmp_path):
    base, tuned = _pair()
    folder = _sharded(tmp_path / "both", tuned)  # the shards hold the tuned weights
    save_file(base, folder / "model.safetensors")  # and model.safetensors (which transformers loads) the base's
    save_file(base, tmp_path / "base.safetensors")
    with pytest.raises(CheckpointError, match="both model.safetensors and model.safetensors.index.json") as info:
        merge_checkpoints(tmp_path / "base.safetensors", [folder], [1.0], tmp_path / "out.safetensors")
    assert str(folder / "model.safetensors") in str(info.value) and not (tmp_path / "out.safetensors").exists()
    out = merge_checkpoints(  # named explicitly, either one merges
        tmp_path / "base.safetensors", [folder / "model.safetensors.index.json"], [1.0], tmp_path / "o.safetensors"
    )
    torch.testing.assert_close(load_file(out)["w"], tuned["w"])


# ---- file descriptors: a base and three fine-tunes of 100 shards each under ulimit -n 256 -----------------------------
def test_many_shards_merge_under_a_low_open_file_limit(tmp_path):
    g = torch.Generator().manual_seed(2)
    base = {f"layer.{i}.w": torch.randn(4, generator=g) for i in range(100)}
    folders = [_sharded(tmp_path / "base", base, shards=100)]
    for t in range(3):
        folders.append(_sharded(tmp_path / f"t{t}", {k: v + t + 1 for k, v in base.items()}, shards=100))
    cmd = [sys.executable, "-m", "tvutils", "merge", "--base", str(folders[0]), "--finetuned", *map(str, folders[1:])]
    cmd += ["--lambdas", "1", "-1", "0.5", "--out", str(tmp_path / "out"), "--quiet", "--no-fsync"]

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert done.returncode == 0, done.stderr[-2000:]
    merged = Checkpoint(tmp_path / "out")
    assert len(merged.files) == 100
    for key in ("layer.0.w", "layer.99.w"):
        torch.testing.assert_close(load_file(merged.tensors[key].file)[key], base[key] + 0.5)  # 1·1 − 1·2 + 0.5·3


# ---- a refused or interrupted merge leaves no folder it created --------------------------------------------------------
def test_a_refused_merge_removes_the_folders_it_created(tmp_path):
    base, tuned = _pair()
    tuned["b"][2] = float("nan")  # refused while merging, after OUT's folders were made
    save_file(base, tmp_path / "b.safetensors")
    save_file(tuned, tmp_path / "t.safetensors")
    with pytest.raises(CheckpointError, match="non-finite"):
        merge_checkpoints(tmp_path / "b.safetensors", [tmp_path / "t.safetensors"], [1.0], tmp_path / "new/deeper/o")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.safetensors", "t.safetensors"]

    def interrupt(msg):
        raise KeyboardInterrupt

    (tmp_path / "mine").mkdir()  # a folder that was there before is kept
    with pytest.raises(KeyboardInterrupt):
        merge_checkpoints(
            _sharded(tmp_path / "sb", base),
            [_sharded(tmp_path / "st", base)],
            [1.0],
            tmp_path / "mine/new/out",
            log=interrupt,
        )
    assert (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())


# ---- special files: refused with their cause, never "no such file" ----------------------------------------------------
def test_fifos_and_devices_are_refused_as_such(tmp_path):
    base, _ = _pair()
    save_file(base, tmp_path / "b.safetensors")
    os.mkfifo(tmp_path / "pipe.safetensors")
    cases = {
        tmp_path / "pipe.safetensors": "FIFO",
        Path("/dev/zero"): "character device",
        Path("/dev/null"): "character device",
    }
    for path, cause in cases.items():
        for args in (([tmp_path / "b.safetensors"], [path]), ([path], [tmp_path / "b.safetensors"])):
            with pytest.raises(CheckpointError, match=f"{cause}.*, not a regular file") as info:
                merge_checkpoints(args[0][0], args[1], [1.0], tmp_path / "out.safetensors")
            assert "no such file" not in str(info.value) and str(path) in str(info.value)
    assert not (tmp_path / "out.safetensors").exists()


# ---- a signal while --overwrite replaces a folder OUT's files one by one ----------------------------------------------
def test_a_signal_while_a_folder_is_replaced_is_raised_once_it_is_whole(tmp_path, monkeypatch, capsys):
    from tvutils.__main__ import main

    base, tuned = _pair()
    bp, tp = _sharded(tmp_path / "base", base), _sharded(tmp_path / "tuned", tuned)
    args = ["merge", "--base", str(bp), "--finetuned", str(tp), "--out", str(tmp_path / "out"), "--quiet"]
    assert main([*args, "--lambdas", "1"]) == 0
    replace, calls = os.replace, []

    def replace_then_signal(src, dst):  # Ctrl-C after the first file of OUT is replaced
        replace(src, dst)
        calls.append(dst)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(os, "replace", replace_then_signal)
    assert main([*args, "--lambdas", "0", "--overwrite"]) == 130
    monkeypatch.setattr(os, "replace", replace)
    merged = Checkpoint(tmp_path / "out")
    for key in base:  # every shard is the new merge (λ = 0: the base), none the old one
        assert torch.equal(load_file(merged.tensors[key].file)[key], base[key]), key
    assert len(calls) == 4  # two shards, config.json, then the index: all of them, not one
    assert "published in full" in capsys.readouterr().err and _no_tmp(tmp_path)
