"""Publishing a merge's output atomically (``python -m tvutils merge``; the contract: ``tvutils.editing.streaming``).

The output is planned and checked first (``check_target``), written under a hidden temporary name beside OUT
(``.OUT.tvmerge-PID-XXXX.tmp``, locked while the merge runs) and published by one rename that replaces nothing
(``publish``); a refused or interrupted merge removes the temporary output and every folder it created for OUT
(``Workspace``). ``deferred_signals`` holds SIGINT, SIGTERM and SIGHUP back around code in which Python could
not raise them (a compiler's ctypes callbacks), and delivers them after.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import secrets
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from .checkpoint import INDEX_NAME, PICKLE_SUFFIXES, CheckpointError

TMP = ".tvmerge-"
# Weights in any format: never copied into OUT, and a folder OUT holding them is not overwritten into.
WEIGHT_SUFFIXES = (
    ".safetensors",
    ".index.json",
    *PICKLE_SUFFIXES,
    ".h5",
    ".msgpack",
    ".onnx",
    ".onnx_data",
    ".ot",
    ".tflite",
    ".gguf",
    ".ggml",
    ".npz",
    ".npy",
    ".pb",
    ".mlmodel",
    ".mlpackage",
    ".keras",
    ".engine",
    ".nemo",
)
# The base folder's files copied into a folder OUT: configuration, tokenizer, chat templates, model card, code.
COPIED_SUFFIXES = (".json", ".txt", ".model", ".tiktoken", ".jinja", ".md", ".py", ".yaml", ".yml")


def is_weight(name: str) -> bool:
    lower = name.lower()
    return lower.endswith(WEIGHT_SUFFIXES) or ".index." in lower or ".data-" in lower


def copied_files(folder: Path) -> list[Path]:
    """The files of a base folder a folder OUT receives: regular files (or links to one) at its top level whose
    names end in ``COPIED_SUFFIXES`` and that are no weights (an index ``*.index.json`` is one)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.name.lower().endswith(COPIED_SUFFIXES) and not is_weight(p.name)
    )


# ---- the no-replace rename, locks, leftovers ------------------------------------------------------------------------
_RENAME_NOREPLACE = 1
try:
    _renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
except (AttributeError, OSError):  # not glibc / not Linux
    _renameat2 = None


def rename_noreplace(src: Path, dst: Path, is_dir: bool) -> None:
    """Rename src to dst unless dst exists (FileExistsError); never replaces anything."""
    if _renameat2 is not None:
        if _renameat2(-100, os.fsencode(src), -100, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(dst))
    if not is_dir:  # a hard link is created exclusively
        os.link(src, dst)
        os.unlink(src)
        return
    os.mkdir(dst)  # exclusive; then the entries move in
    for entry in os.listdir(src):
        os.rename(src / entry, dst / entry)
    os.rmdir(src)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def lock(path: Path) -> int | None:
    """An exclusive lock on a file or folder (held while the fd is open); None if someone else holds it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def clean_leftovers(target: Path, log: Callable[[str], None] | None = None) -> list[Path]:
    """Remove the temporary outputs of merges into ``target`` that were killed (no live process locks them)."""
    removed = []
    folder = target.parent
    if not folder.is_dir():
        return removed
    prefix = f".{target.name}{TMP}"
    for entry in folder.iterdir():
        if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
            continue
        try:
            fd = lock(entry)
        except OSError:
            continue
        if fd is None:
            continue  # a merge that is running
        try:
            remove(entry)
            removed.append(entry)
        finally:
            os.close(fd)
        if log is not None:
            log(f"removed {entry.name}, the leftover of a merge that was killed")
    return removed


# ---- the checks before anything is written --------------------------------------------------------------------------
def check_target(target: Path, folder_out: bool, names: list[str], inputs: list, overwrite: bool) -> bool:
    """Refuse an OUT that is or holds an input or lies in an input's folder; True when OUT exists (overwrite).
    ``inputs``: objects with ``path``, ``files`` and ``folder`` (checkpoints and adapters)."""
    if target.name in ("", ".", ".."):
        raise CheckpointError(f"{target}: not a name an output can be written under")
    real = Path(os.path.realpath(target))
    for parent in target.parents:
        if os.path.lexists(parent):
            if not parent.is_dir():
                raise CheckpointError(f"{parent}: not a folder, so {target} cannot be written")
            break
    for ck in inputs:
        owned = [Path(os.path.realpath(p)) for p in (ck.path, *ck.files)]
        if ck.folder is not None:
            owned.append(Path(os.path.realpath(ck.folder)))
        for p in owned:
            if real == p:
                raise CheckpointError(f"{target}: the output would overwrite the input {p}")
            if p.is_relative_to(real):
                raise CheckpointError(f"{target}: the output folder holds the input {p}; choose another OUT")
        if ck.folder is not None and real.is_relative_to(os.path.realpath(ck.folder)):
            raise CheckpointError(f"{target}: the output would be written inside the input checkpoint {ck.folder}")
    if not os.path.lexists(target):
        return False
    if not overwrite:
        raise CheckpointError(f"{target} exists; pass overwrite=True (--overwrite) to replace it")
    if folder_out and not target.is_dir():
        raise CheckpointError(f"{target} is a file, and this merge writes a folder; not replaced")
    if not folder_out and (target.is_dir() or not target.is_file()):
        raise CheckpointError(f"{target} is not a regular file, and this merge writes one; not replaced")
    if folder_out:
        written = {n.split("/")[0] for n in names}
        others = sorted(p.name for p in target.iterdir() if is_weight(p.name) and p.name not in written)
        if others:
            raise CheckpointError(
                f"{target} holds weight files this merge would not replace ({', '.join(others[:5])}); a loader "
                "could take them for the merged model. Remove them, or choose another OUT"
            )
    return True


# ---- the temporary output and its publication -----------------------------------------------------------------------
class Workspace:
    """The temporary output beside ``target``, locked; on leaving with an error, it and every folder created for
    ``target`` are removed (the folders only while empty: nothing of anyone else's is touched)."""

    def __init__(self, target: Path, folder_out: bool, log: Callable[[str], None] | None) -> None:
        self.target, self.folder_out, self.log = target, folder_out, log
        self.created: list[Path] = []
        self.lock: int | None = None
        self.tmp = target.parent / f".{target.name}{TMP}{os.getpid()}-{secrets.token_hex(4)}.tmp"

    def __enter__(self) -> Workspace:
        missing = []
        for parent in self.target.parents:
            if os.path.lexists(parent):
                break
            missing.append(parent)
        try:
            for folder in reversed(missing):
                os.mkdir(folder)
                self.created.append(folder)
            clean_leftovers(self.target, self.log)
            create(self.tmp, self.folder_out)
            self.lock = lock(self.tmp)
        except BaseException as err:
            self.__exit__(type(err), err, None)
            if isinstance(err, OSError):
                raise os_error(err, self.target) from None
            raise
        return self

    def __exit__(self, kind: object, err: object, tb: object) -> None:
        if self.lock is not None:
            os.close(self.lock)
            self.lock = None
        if os.path.lexists(self.tmp):
            remove(self.tmp)
        if kind is not None:
            for folder in reversed(self.created):
                with contextlib.suppress(OSError):
                    os.rmdir(folder)  # only while empty


def create(tmp: Path, folder: bool) -> None:
    """Create the temporary output exclusively (the one place it is created; tests hook it to simulate errors)."""
    if folder:
        os.mkdir(tmp)
    else:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))


def publish(tmp: Path, target: Path, folder_out: bool, exists: bool, names: list[str]) -> None:
    if not exists:
        try:
            rename_noreplace(tmp, target, folder_out)
        except FileExistsError:
            raise CheckpointError(
                f"{target} appeared while this merge ran (another merge?); it was left as it is and nothing was "
                "written; pass --overwrite to replace it"
            ) from None
        return
    if not folder_out:
        os.replace(tmp, target)
        return
    for name in sorted(names, key=lambda n: n == INDEX_NAME):  # shards and extras first, the index last
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        if (target / name).is_dir() and not (target / name).is_symlink():
            raise CheckpointError(f"{target / name} is a folder; not replaced")
        os.replace(tmp / name, target / name)


def os_error(err: OSError, target: Path) -> CheckpointError:
    where = err.filename if err.filename is not None else target
    if err.filename2 is not None:
        where = f"{where} → {err.filename2}"
    return CheckpointError(f"{where}: {err.strerror or err} (while writing {target})")


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_small(path: Path, data: bytes, fsync: bool) -> None:
    with open(path, "wb") as fh:
        write_all(fh.fileno(), memoryview(data), path)
        if fsync:
            os.fsync(fh.fileno())


def write_all(fd: int, view: memoryview, path: Path) -> None:
    """Write every byte of view (the one place output bytes are written; tests hook it to simulate errors)."""
    try:
        while len(view):
            view = view[os.write(fd, view) :]
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from None


# ---- signals ------------------------------------------------------------------------------------------------------
SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP back while the block runs; deliver the first that came, after it.

    Python runs a signal's handler at the next bytecode of the main thread. Inside a compiler (numba's LLVM code
    generation) that bytecode may be a ctypes callback or a ``__del__``, where an exception is printed and
    dropped: the merge would go on. Here the handlers only record the signal; on leaving, the previous handlers
    come back and the signal is raised again, where it can unwind. Off the main thread: no change."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    previous = {sig: handler for sig, handler in previous.items() if handler is not None}  # None: set outside Python
    for sig in previous:
        signal.signal(sig, lambda signum, frame: came.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if came:
            signal.raise_signal(came[0])
