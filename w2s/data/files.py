"""Files written atomically (temporary sibling, fsync, rename) and JSON Lines read back safely.

Readers see the old file or the new one, never half of one; an append-only JSON Lines file written with
:func:`append_jsonl` loses at most a partial last line to a crash, which :func:`read_jsonl` skips.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def give_usual_modes(folder: str | os.PathLike) -> None:
    """Every file under ``folder`` gets the mode a plain write would give it (0666 less the umask): some writers
    (safetensors through temporary files) leave 0600, which other users of a shared run folder cannot read."""
    mode = 0o666 & ~_umask()
    for p in Path(folder).rglob("*"):
        if p.is_file() and not p.is_symlink():
            os.chmod(p, mode)


@contextlib.contextmanager
def naming(path: str | os.PathLike) -> Iterator[None]:
    """An OSError raised inside names ``path`` when it names no file: a full disk fails a ``write`` or ``fsync``
    (ENOSPC) with no file in the error, and the message would not say where."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write to a temporary sibling, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual mode
        with naming(path), os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSON Lines atomically; returns how many."""
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in rows]
    atomic_write_text(path, "".join(lines))
    return len(lines)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a JSON Lines file; a partial last line (a crash mid-append) is skipped."""
    rows = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise
    return rows


def append_jsonl(path: str | os.PathLike, row: dict[str, Any]) -> None:
    """Append one line and fsync."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with naming(path), open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


# How long a writer waits for a lock whose recorded holder has exited on this host (a straggler it started).
STRAGGLER_WAIT_S = 15.0


def _exited_here(holder: str) -> bool:
    """Whether a lock file's ``pid N on HOST ...`` names a process of this host that no longer exists."""
    import socket

    parts = holder.split()
    if len(parts) < 4 or parts[0] != "pid" or parts[2] != "on" or parts[3] != socket.gethostname():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


def _holders(path: Path) -> list[str]:
    """The processes of this host that have ``path`` open (Linux's /proc; empty elsewhere): 'pid N (command)'."""
    found = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.path.realpath(f) == str(path.resolve()) for f in fd_dir.iterdir()):
                pid = fd_dir.parent.name
                found.append(f"pid {pid} ({(fd_dir.parent / 'comm').read_text().strip()})")
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


class WriterLock:
    """One writer at a time for a run directory or an output file: an exclusive ``flock`` on ``PATH``, which
    the kernel releases when the holding process exits, however it exits (no stale lock after a SIGKILL).

    The holder's host, pid and start time are written into the lock file, so that a second writer is told who
    holds it. On network file systems without working ``flock`` the lock is advisory at best.
    """

    def __init__(self, path: str | os.PathLike, what: str):
        self.path, self.what = Path(path), what
        self._fd: int | None = None

    def acquire(self) -> WriterLock:
        import fcntl
        import socket
        import time

        from w2s.errors import W2SError

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + STRAGGLER_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
                gone = _exited_here(holder)
                # The writer died a moment ago (a crash, a requeue), but a process it was starting still shares the
                # lock's open file until it execs or exits: give it a few seconds rather than refuse the rerun.
                if gone and time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                os.close(fd)
                why = (f"; that process has exited, but {', '.join(_holders(self.path)) or 'a process it started'} "
                       "still holds the lock" if gone else "")
                raise W2SError(f"{self.what} is being written by {holder} (lock {self.path}){why}; wait for that "
                               "process to finish or stop it, or choose another output") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
                  .encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __del__(self) -> None:  # a holder dropped without release(), like a file object
        self.release()

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


class HashCache:
    """sha256 of files and folders, remembered in a JSON file by each file's stamp, so that verifying the inputs and
    outputs of finished stages on every resume reads only what changed (a model folder is hashed once).

    The stamp is size, modification time, inode change time and inode number: ``os.utime`` (or ``touch -r``,
    ``cp -p``) can put a modification time back after an edit, but no call sets the change time, and a file
    swapped in by rename has another inode."""

    def __init__(self, path: Path | None):
        self.path = path
        self._entries: dict[str, list] = {}
        if path is not None and path.exists():
            try:
                self._entries = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                self._entries = {}  # a cache: rebuilt, never trusted over the files themselves
        self._dirty = False

    def _file(self, q: Path) -> str:
        st = q.stat()
        key, stamp = str(q.resolve()), [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        hit = self._entries.get(key)
        if hit and hit[:-1] == stamp:
            return hit[-1]
        h = hashlib.sha256()
        with open(q, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        self._entries[key] = [*stamp, h.hexdigest()]
        self._dirty = True
        return h.hexdigest()

    def sha256(self, p: Path) -> str:
        if not p.is_dir():
            return self._file(p)
        h = hashlib.sha256()
        for q in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(f"{q.relative_to(p)}\0{self._file(q)}\n".encode())
        return h.hexdigest()

    def describe(self, p: Path) -> dict[str, Any]:
        """What a manifest records of a file or folder: path, total size and sha256."""
        files = [q for q in p.rglob("*") if q.is_file()] if p.is_dir() else [p]
        return {"path": str(p), "size": sum(q.stat().st_size for q in files), "sha256": self.sha256(p)}

    def save(self) -> None:
        if self._dirty and self.path is not None:
            atomic_write_json(self.path, self._entries)
            self._dirty = False
