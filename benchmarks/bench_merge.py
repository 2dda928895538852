"""Benchmark: streaming task arithmetic on a generated Llama-style checkpoint.

OUT = BASE + 1.0·(A − BASE) − 0.6·(B − BASE) on a sharded fp32 checkpoint with two fine-tuned copies, by

* ``stream``    ``python -m tvutils merge`` (tvutils.editing.streaming: one tensor at a time, reused buffers),
* ``memory``    the in-memory computation: load the three models whole, merge, save,
* ``mergekit``  ``mergekit-yaml`` with ``merge_method: task_arithmetic`` (optional extra ``bench``),
* ``io``        the machine's own limit: read every input file while writing one output of the same size, in two
                threads (fsync'd, as the stream's output is), no arithmetic;
* ``stream-rank``, ``stream-entries``: the streaming merge with ``--rank 8`` / ``--keep-entries 0.1``;
* ``stream-one``: the plain merge of one full fine-tune (BASE + 1.0·(A − BASE)), and ``stream-adapter``: of a
  rank-16 LoRA adapter on every projection of every layer (BASE + 1.0·s·B·A), the same merge from an adapter;
* ``-nosync`` versions of ``io`` and ``stream`` skip the fsync (mergekit and the in-memory version do not fsync).

Each runs in its own process, after an ``os.sync()`` and ``--settle`` (see ``settle``), and writes the same output
path, removed just before (so that each starts from the same state of memory: see the comment in ``main``): wall
time, peak RSS and CPU time, user time apart (from wait4). ``--repeats`` rounds run every method once each,
interleaved (round 1: io, stream, …, mergekit; round 2: the same), and the medians over rounds are
reported, so that a burst of load on the shared machine hits every method alike. The streamed output is compared
with the in-memory one (and mergekit's) tensor by tensor. Ratios are what to read; absolute times on a shared
machine are noise.

mergekit is found as ``--mergekit PATH``, else ``mergekit-yaml`` beside this Python, else on PATH (it may live in
a virtual environment of its own, since it pins its own transformers).

    python benchmarks/bench_merge.py                       # about 1.2 GB per model (minutes)
    python benchmarks/bench_merge.py --hidden 64 --layers 2 --vocab 256   # a tiny run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAMBDAS = (1.0, -0.6)
# Free page reporting (a virtual machine's guest kernel handing free memory back to the host, which must fault it
# in again when the guest touches it): the count of KiB reported so far, where the kernel exposes it.
REPORTED_KIB = Path("/sys/module/page_reporting/parameters/reported_kib")


# ---- the generated checkpoints --------------------------------------------------------------------------------
def llama_shapes(hidden: int, intermediate: int, layers: int, vocab: int) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a Llama causal LM (untied embeddings), in Hugging Face order."""
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[p + f"self_attn.{proj}.weight"] = (hidden, hidden)
        shapes[p + "mlp.gate_proj.weight"] = (intermediate, hidden)
        shapes[p + "mlp.up_proj.weight"] = (intermediate, hidden)
        shapes[p + "mlp.down_proj.weight"] = (hidden, intermediate)
        shapes[p + "input_layernorm.weight"] = (hidden,)
        shapes[p + "post_attention_layernorm.weight"] = (hidden,)
    shapes["model.norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


ADAPTER_RANK = 16
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def generate_adapter(folder: Path, shapes: dict, rank: int = ADAPTER_RANK) -> None:
    """A PEFT LoRA adapter folder of rank ``rank`` (lora_alpha = 2·rank) on every projection, random factors."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors, g = {}, torch.Generator().manual_seed(7)
    for key, shape in shapes.items():
        if key.endswith(tuple(f"{p}.weight" for p in PROJECTIONS)):
            module = "base_model.model." + key.removesuffix(".weight")
            tensors[module + ".lora_A.weight"] = torch.randn(rank, shape[1], generator=g) * 0.02
            tensors[module + ".lora_B.weight"] = torch.randn(shape[0], rank, generator=g) * 0.02
    save_file(tensors, folder / "adapter_model.safetensors")
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": list(PROJECTIONS)}
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))


def generate(folder: Path, shapes: dict, shards: int, task: int, config: dict) -> None:
    """A sharded checkpoint: base weights (seeded per tensor), plus 0.01·noise for task > 0."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    keys = list(shapes)
    total = sum(torch.Size(s).numel() for s in shapes.values())
    groups, current, size = [], [], 0
    for key in keys:  # cut into shards of about equal size
        current.append(key)
        size += torch.Size(shapes[key]).numel()
        if size >= total * (len(groups) + 1) / shards and len(groups) < shards - 1:
            groups.append(current)
            current = []
    groups.append(current)
    weight_map = {}
    for s, group in enumerate(groups):
        name = f"model-{s + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {}
        for key in group:
            i = keys.index(key)
            t = torch.randn(shapes[key], generator=torch.Generator().manual_seed(i)) * 0.02
            if task:
                t += 0.01 * torch.randn(shapes[key], generator=torch.Generator().manual_seed(1_000_003 * task + i))
            tensors[key] = t
            weight_map[key] = name
        save_file(tensors, folder / name, metadata={"format": "pt"})
        del tensors
    index = {"metadata": {"total_size": 4 * total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (folder / "config.json").write_text(json.dumps(config, indent=2))


# ---- the methods, each run in its own process -------------------------------------------------------------------
def in_memory(base: str, tuned: list[str], out: str) -> None:
    """Load every model whole, merge in memory, save with the base's shard layout."""
    import torch  # noqa: F401
    from safetensors.torch import load_file, save_file

    def load(folder: str) -> dict:
        index = json.loads((Path(folder) / "model.safetensors.index.json").read_text())
        sd = {}
        for shard in dict.fromkeys(index["weight_map"].values()):
            sd.update(load_file(Path(folder) / shard))
        return sd

    b = load(base)
    models = [load(t) for t in tuned]
    merged = {k: v + sum(lam * (m[k] - v) for lam, m in zip(LAMBDAS, models)) for k, v in b.items()}
    index = json.loads((Path(base) / "model.safetensors.index.json").read_text())
    Path(out).mkdir(parents=True)
    for shard in dict.fromkeys(index["weight_map"].values()):
        part = {k: merged[k] for k, s in index["weight_map"].items() if s == shard}
        save_file(part, Path(out) / shard, metadata={"format": "pt"})
    shutil.copy(Path(base) / "model.safetensors.index.json", Path(out))


def io_limit(inputs: list[str], out: str, fsync: bool = True) -> None:
    """Read every input file and write one output as large as the largest model (fsync'd if asked): no arithmetic.

    The reads and the writes run side by side, in two threads, each through a 1 MB buffer that stays in cache:
    the fastest a merge could go on this machine, if its arithmetic cost nothing."""
    import threading

    files = [sorted(Path(folder).glob("*.safetensors")) for folder in inputs]
    size = max(sum(f.stat().st_size for f in group) for group in files)

    def read_all() -> None:
        view = memoryview(bytearray(1 << 20))
        for f in (f for group in files for f in group):
            with open(f, "rb", buffering=0) as fh:
                while fh.readinto(view):
                    pass

    reader = threading.Thread(target=read_all)
    reader.start()
    view, left = memoryview(bytearray(1 << 20)), size
    with open(out, "wb", buffering=0) as fh:
        while left > 0:
            left -= fh.write(view[: min(left, len(view))])
        if fsync:
            os.fsync(fh.fileno())
    reader.join()


def settle(seconds: float, quiet: float = 2.5, limit: float = 30.0) -> float:
    """Wait until memory freed just now is in the state memory freed long ago is in; return the KiB reported.

    On a virtual machine with free page reporting the guest hands free memory back to the host in passes, a
    second or more after it was freed, and writing into memory handed back costs the kernel several times more
    than writing into memory freed a moment ago. Without a wait, a method's cost depends on where it falls in
    that cycle. With ``REPORTED_KIB`` readable: wait until its count has not moved for ``quiet`` seconds (at most
    ``limit``); otherwise sleep ``seconds``."""
    if seconds <= 0:
        return 0.0
    try:
        first = last = int(REPORTED_KIB.read_text())
    except (OSError, ValueError):
        time.sleep(seconds)
        return 0.0
    start = still = time.perf_counter()
    while (now := time.perf_counter()) - still < quiet and now - start < limit:
        time.sleep(0.1)
        count = int(REPORTED_KIB.read_text())
        if count != last:
            last, still = count, time.perf_counter()
    return float(last - first)


def measure(cmd: list[str], env: dict | None = None) -> tuple[float, float, float, float]:
    """Run a command; return (wall seconds, peak RSS in MB, CPU seconds: user + system, user seconds alone) of
    that process. User time is the process's own work (the arithmetic); system time is the kernel's copying
    to and from the page cache, which on a virtual machine varies with what the host has to fault in."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} … failed ({proc.returncode}):\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, usage.ru_utime


def compare(reference: Path, other: Path) -> float:
    """Largest |other − reference| / max|reference| over the tensors of two sharded outputs."""
    from safetensors import safe_open

    sys.path.insert(0, str(ROOT))
    from tvutils.editing.checkpoint import Checkpoint

    def tensors(folder: Path) -> dict[str, Path]:
        return {k: info.file for k, info in Checkpoint(folder).tensors.items()}

    ref, oth = tensors(reference), tensors(other)
    if set(ref) != set(oth):
        raise AssertionError(f"{other} has different keys from {reference}")
    worst = 0.0
    for key, path in ref.items():
        with safe_open(path, "pt") as a, safe_open(oth[key], "pt") as b:
            x, z = a.get_tensor(key), b.get_tensor(key)
            worst = max(worst, float((z.float() - x.float()).abs().max() / x.float().abs().max().clamp_min(1e-30)))
    return worst


# ---- the benchmark ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--intermediate", type=int, default=None, help="default: 8/3 · hidden")
    parser.add_argument("--layers", type=int, default=36)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=ROOT / "_cache" / "bench" / "merge")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=[
            "io",
            "io-nosync",
            "stream",
            "stream-nosync",
            "stream-rank",
            "stream-entries",
            "stream-one",
            "stream-adapter",
            "memory",
            "mergekit",
        ],
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--mergekit", type=Path, default=None, help="the mergekit-yaml executable")
    parser.add_argument(
        "--settle",
        type=float,
        default=5.0,
        help="before each method, wait this long (or, where the kernel reports it, until free page reporting has "
        "been quiet for 2.5 s) so that memory just freed is handed back to the host as memory freed long ago is; "
        "0: no wait",
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated checkpoints")
    parser.add_argument("--reuse", action="store_true", help="reuse checkpoints kept by --keep with the same spec")
    args = parser.parse_args(argv)
    inter = args.intermediate or 8 * args.hidden // 3
    shapes = llama_shapes(args.hidden, inter, args.layers, args.vocab)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": args.hidden,
        "intermediate_size": inter,
        "num_hidden_layers": args.layers,
        "num_attention_heads": max(1, args.hidden // 64),
        "num_key_value_heads": max(1, args.hidden // 64),
        "vocab_size": args.vocab,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
    }
    work = args.workdir
    models = {name: work / name for name in ("base", "A", "B")}
    spec = json.dumps(
        {"shapes": shapes, "shards": args.shards, "config": config, "models": [str(m) for m in models.values()]}
    )
    reuse = args.reuse and (work / "spec.json").is_file() and (work / "spec.json").read_text() == spec
    if work.exists() and not reuse:
        shutil.rmtree(work)
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    py, me = sys.executable, str(Path(__file__).resolve())
    if not reuse:  # in a child process: this one must stay small (a child's peak RSS counts its parent's)
        subprocess.run([py, me, "_generate", spec], check=True, env=env)
        (work / "spec.json").write_text(spec)
    size_mb = sum(f.stat().st_size for f in models["base"].glob("*.safetensors")) / 2**20
    print(
        f"generated 3 checkpoints: {len(shapes)} tensors, {args.shards} shards, {size_mb:.0f} MB each "
        f"({time.perf_counter() - start:.0f} s)"
    )
    tuned = [str(models["A"]), str(models["B"])]
    mergekit = args.mergekit or Path(sys.executable).parent / "mergekit-yaml"
    if not mergekit.exists() and shutil.which("mergekit-yaml"):
        mergekit = Path(shutil.which("mergekit-yaml"))

    def stream_command(out: Path, *extra: str, tuned: list[str] = tuned, lambdas: tuple = LAMBDAS) -> list[str]:
        """The command line of this book's streaming merge (python -m tvutils merge) on the generated models."""
        lambdas = [str(lam) for lam in lambdas]
        return [
            py,
            "-m",
            "tvutils",
            "merge",
            "--base",
            str(models["base"]),
            "--finetuned",
            *tuned,
            "--lambdas",
            *lambdas,
            "--out",
            str(out),
            "--quiet",
            *extra,
        ]

    out, reference = work / "out", work / "reference"  # every method writes OUT (see the loop below)
    commands = {
        "io": [py, me, "_io", str(out), str(models["base"]), *tuned],
        "stream": stream_command(out),
        "io-nosync": [py, me, "_io-nosync", str(out), str(models["base"]), *tuned],
        "stream-nosync": stream_command(out, "--no-fsync"),
        "stream-rank": stream_command(out, "--rank", "8"),
        "stream-entries": stream_command(out, "--keep-entries", "0.1"),
        "stream-one": stream_command(out, tuned=tuned[:1], lambdas=(1.0,)),
        "stream-adapter": stream_command(out, tuned=[str(work / "adapter")], lambdas=(1.0,)),
        "memory": [py, me, "_memory", str(models["base"]), *tuned, str(out)],
    }
    if mergekit.exists():
        spec = {
            "merge_method": "task_arithmetic",
            "base_model": str(models["base"]),
            "dtype": "float32",
            "parameters": {"normalize": False},
            "models": [{"model": t, "parameters": {"weight": lam}} for t, lam in zip(tuned, LAMBDAS)],
        }
        (work / "mergekit.yml").write_text(json.dumps(spec))
        commands["mergekit"] = [
            str(mergekit),
            str(work / "mergekit.yml"),
            str(out),
            "--quiet",
            "--no-copy-tokenizer",
            "--no-write-model-card",
        ]
    runs: dict[str, list[tuple[float, float]]] = {}
    methods = [m for m in args.methods if m in commands]
    methods.sort(key=lambda m: m != "memory")  # the in-memory merge first: its output is the reference
    for name in args.methods:
        if name not in commands:
            print(f"{name}: skipped (mergekit not found: pip install -e '.[bench]' -c constraints, or --mergekit)")
    # Every method writes the same OUT, removed just before the next method runs, then an os.sync() and a wait
    # for free page reporting to settle: each starts from the same state (no dirty pages to write back; the
    # memory its output will take freed and handed back to the host, as memory freed long ago is when a user
    # starts a merge). On a virtual machine, memory handed back costs the kernel several times more to write
    # into than memory freed a moment ago (the host faults it in again); the guest hands it back in passes a
    # second or more after the free, so without the wait each method's cost depends on where in that cycle it
    # falls. The outputs compared are compared right after their run, in a child process.
    errors: dict[str, float] = {}
    ref_name = None
    for rep in range(args.repeats):
        for name in methods:
            if out.exists():
                shutil.rmtree(out) if out.is_dir() else out.unlink()
            os.sync()
            reported = settle(args.settle)
            runs.setdefault(name, []).append(measure(commands[name], env))
            wall, rss, cpu, user = runs[name][-1]
            print(
                f"round {rep + 1}  {name:14s} {wall:7.1f} s  {rss:7.0f} MB peak RSS  {cpu:6.1f} s CPU "
                f"({user:.1f} s user)" + (f"  [{reported / 1024:.0f} MB handed back before it]" if reported else ""),
                flush=True,
            )
            if name in ("memory", "stream", "stream-nosync", "mergekit"):  # the exact merges, compared
                if ref_name is None:  # the first one's output is the reference, kept aside
                    out.rename(reference)
                    ref_name = name
                elif name != ref_name:
                    diff = subprocess.run(
                        [py, me, "_compare", str(reference), str(out)], env=env, check=True, capture_output=True
                    )
                    errors[name] = max(errors.get(name, 0.0), float(diff.stdout))
    results = {name: tuple(statistics.median(x[i] for x in r) for i in range(4)) for name, r in runs.items()}
    for path in (out, reference):
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    print(
        f"\nmodel: {len(shapes)} tensors, {size_mb:.0f} MB per checkpoint; largest tensor "
        f"{max(4 * __import__('math').prod(s) for s in shapes.values()) / 2**20:.0f} MB"
    )
    ref = results.get("io")
    print(f"medians over {args.repeats} interleaved round(s); walls of each round in brackets")
    if ref_name is not None:
        print(f"max rel. diff: the largest over rounds and tensors, against the output of {ref_name}")
    print(
        f"{'method':14s} {'wall s':>7s} {'wall / io':>10s} {'RSS MB':>8s} {'CPU s':>6s} {'user s':>6s} "
        f"{'max rel. diff':>14s}  rounds"
    )
    for name, (wall, rss, cpu, user) in results.items():
        ratio = f"{wall / ref[0]:10.2f}" if ref else f"{'-':>10s}"
        diff = f"{errors[name]:14.1e}" if name in errors else f"{'':14s}"
        rounds = ", ".join(f"{w[0]:.1f}" for w in runs[name])
        print(f"{name:14s} {wall:7.1f} {ratio} {rss:8.0f} {cpu:6.1f} {user:6.1f} {diff}  [{rounds}]")
    for name in ("stream", "stream-nosync"):
        if name in results and "mergekit" in results:
            s, m = results[name], results["mergekit"]
            print(
                f"{name} vs mergekit: {m[0] / s[0]:.2f}× faster ({m[2] / s[2]:.2f}× less CPU), "
                f"{s[1] / m[1]:.2f}× the peak RSS"
            )
    if "stream-nosync" in results and "io-nosync" in results:
        s, i = results["stream-nosync"], results["io-nosync"]
        print(
            f"stream-nosync / io-nosync: {s[0] / i[0]:.2f} (wall), {s[2] / i[2]:.2f} (CPU); the arithmetic's user "
            f"time beyond the copying: {s[3] - i[3]:.2f} s"
        )
    if "stream" in results and "memory" in results:
        s, m = results["stream"], results["memory"]
        print(f"stream vs memory:   {m[0] / s[0]:.2f}× faster, {s[1] / m[1]:.2f}× the peak RSS")
    if "stream-adapter" in results and "stream-one" in results:
        a, s = results["stream-adapter"], results["stream-one"]
        print(
            f"stream-adapter / stream-one: {a[0] / s[0]:.2f}× the wall time, {a[2] / s[2]:.2f}× the CPU time, "
            f"{a[1] / s[1]:.2f}× the peak RSS"
        )
    for name in ("stream-rank", "stream-entries"):
        if name in results and "stream" in results:
            v, s = results[name], results["stream"]
            print(
                f"{name} / stream: {v[0] / s[0]:.2f}× the wall time, {v[2] / s[2]:.2f}× the CPU time, "
                f"{v[1] / s[1]:.2f}× the peak RSS"
            )
    if not args.keep:
        shutil.rmtree(work)
    return {"results": results, "runs": runs, "errors": errors, "size_mb": size_mb, "tensors": len(shapes)}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_generate":
        spec = json.loads(sys.argv[2])
        shapes = {k: tuple(v) for k, v in spec["shapes"].items()}
        for task, folder in enumerate(spec["models"]):
            generate(Path(folder), shapes, spec["shards"], task, spec["config"])
        generate_adapter(Path(spec["models"][0]).parent / "adapter", shapes)
    elif len(sys.argv) > 1 and sys.argv[1] == "_compare":
        print(compare(Path(sys.argv[2]), Path(sys.argv[3])))
    elif len(sys.argv) > 1 and sys.argv[1] == "_memory":
        in_memory(sys.argv[2], sys.argv[3:-1], sys.argv[-1])
    elif len(sys.argv) > 1 and sys.argv[1] in ("_io", "_io-nosync"):
        io_limit(sys.argv[3:], sys.argv[2], fsync=sys.argv[1] == "_io")
    else:
        main()
