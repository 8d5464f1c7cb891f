"""One writer per output folder: a lock file in ``--out`` held for the whole run.

``osep-nas train``, ``study`` and ``search`` write their output folder for minutes to days;
two of them on one folder would interleave their files, so each holds
``with hold_out_dir(out): ...`` while it writes.  The lock is ``OUT/.osep-nas.lock``
(:data:`LOCK_NAME`), created with ``O_EXCL`` and held with ``flock``: a second process gets
a one-line ``ValueError``, a lock whose owner died (even by ``kill -9``) is taken over, and
the lock is re-entrant within one process.  It is not part of a run's output
(:func:`out_entries` lists a folder without it).  Rules: docs/security.md.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Union

try:  # POSIX; elsewhere the pid check alone decides
    import fcntl
except ImportError:  # pragma: no cover - not on Linux/macOS
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "hold_out_dir", "out_entries", "is_lock_file", "read_owner"]

#: the lock file's name inside the output folder
LOCK_NAME = ".osep-nas.lock"
_MAX_LOCK_BYTES = 4096
_held: Dict[str, int] = {}  # real path of a lock this process holds -> nesting depth
_guard = threading.Lock()

PathLike = Union[str, "os.PathLike[str]"]


def is_lock_file(name: Union[str, Path]) -> bool:
    """True for the lock file's name (or a path ending in it)."""
    return Path(name).name == LOCK_NAME


def out_entries(folder: PathLike) -> List[Path]:
    """The entries of ``folder`` without the lock file (empty when it does not exist):
    what "is this output folder empty?" should look at."""
    p = Path(folder)
    if not p.is_dir():
        return []
    return sorted(e for e in p.iterdir() if e.name != LOCK_NAME)


def _shown(text: Any, limit: int = 160) -> str:
    """``text`` for a one-line message: control characters escaped, at most ``limit`` characters."""
    s = str(text)
    s = "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return False
    # a zombie (killed, not yet reaped by its parent) holds nothing
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[-1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def read_owner(lock: PathLike) -> Optional[Dict[str, Any]]:
    """The owner record of a lock file (pid, host, started), or None when it is missing,
    empty, torn or not ours."""
    try:
        with open(lock, "rb") as fh:
            data = fh.read(_MAX_LOCK_BYTES)
        rec = json.loads(data.decode("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("pid"), int) or isinstance(rec.get("pid"), bool):
        return None
    return rec


def _record() -> bytes:
    now = _dt.datetime.now().astimezone()
    rec = {"pid": os.getpid(), "host": socket.gethostname(),
           "started": now.strftime("%Y-%m-%d %H:%M:%S"), "started_unix": round(now.timestamp(), 3)}
    return (json.dumps(rec) + "\n").encode("utf-8")


def _flock(fd: int) -> Optional[bool]:
    """True when this fd now holds the exclusive lock, False when another holder has it,
    None when the file system has no locks."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        return None  # ENOLCK, EINVAL: no locking here


def _owner_alive(owner: Optional[Dict[str, Any]]) -> bool:
    if owner is None:
        return False
    if owner.get("host") not in (None, socket.gethostname()):
        return True  # cannot look at another host's processes: assume it runs
    return _pid_alive(int(owner["pid"]))


def _busy(out: Path, owner: Optional[Dict[str, Any]]) -> ValueError:
    if owner is None:
        who = "another process"
    else:
        who = f"pid {owner.get('pid')}"
        host = owner.get("host")
        if host and host != socket.gethostname():
            who += f" on {_shown(host, 60)}"
        if owner.get("started"):
            who += f" (started {_shown(owner.get('started'), 40)})"
    return ValueError(f"output folder {_shown(out)} is in use by {who}; wait for it or choose another --out")


def _write_record(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    data = _record()
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


@contextlib.contextmanager
def _closed_on_error(fd: int):
    """Close ``fd`` when the block raises (any exception, interrupts included), then re-raise."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise


def _acquire(out: Path, lock: Path) -> int:
    """Take the lock of ``out``; returns the open descriptor that holds it."""
    flags_new = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(20):  # a few rounds when another process takes over or releases at the same time
        try:
            fd = os.open(lock, flags_new, 0o644)
        except FileExistsError:
            pass
        else:
            with _closed_on_error(fd):
                if _flock(fd) is False:  # someone took over our fresh file before we locked it
                    raise _busy(out, read_owner(lock))
                _write_record(fd)
                return fd
        # the file exists: is its owner alive?
        try:
            fd = os.open(lock, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            continue  # released meanwhile: create it
        with _closed_on_error(fd):
            got = _flock(fd)
            owner = read_owner(lock)
            if got is False:  # the kernel lock is held
                if owner is not None and owner.get("host") == socket.gethostname() \
                        and not _pid_alive(int(owner["pid"])):
                    # the recorded owner is dead; an orphaned child of it still has the file
                    # open: start a fresh file
                    os.close(fd)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(lock)
                    continue
                raise _busy(out, owner)
            if got is None:  # no kernel locks on this file system: the pid decides
                if _owner_alive(owner) or (owner is None and _recent(lock)):
                    raise _busy(out, owner)
                os.close(fd)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock)
                continue
            # stale (the owner is gone), and we hold the kernel lock of this inode now:
            # take over the file, unless it was removed or replaced in between
            try:
                same = os.stat(lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            _write_record(fd)
            return fd
    raise ValueError(f"output folder {_shown(out)}: could not take its lock {LOCK_NAME} (it keeps changing)")


def _recent(lock: Path, seconds: float = 5.0) -> bool:
    """A lock file without a readable owner that was made a moment ago is being written."""
    try:
        return time.time() - os.stat(lock).st_mtime < seconds
    except OSError:
        return False


def _release(lock: Path, fd: int) -> None:
    try:
        if os.stat(lock).st_ino == os.fstat(fd).st_ino:
            os.unlink(lock)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


@contextlib.contextmanager
def hold_out_dir(out: PathLike) -> Iterator[Path]:
    """Hold the output folder ``out`` for the duration of the ``with`` block (see
    docs/security.md); yields ``Path(out)``.  Creates ``out`` (and missing parents) when needed.

    ValueError (one line) when another live process holds it or it cannot be created
    (exists as a file, parent not writable); a stale lock is taken over."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {_shown(out)} exists and is not a folder")
    created: List[Path] = []
    p = out
    while not p.exists() and p != p.parent:
        created.append(p)
        p = p.parent
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"output folder {_shown(out)}: cannot create it ({exc.strerror or exc})") from None
    lock = out / LOCK_NAME
    key = os.path.realpath(lock)
    with _guard:
        depth = _held.get(key, 0)
        if depth:
            _held[key] = depth + 1
    if depth:  # this process holds it already
        try:
            yield out
        finally:
            with _guard:
                _held[key] -= 1
        return
    try:
        fd = _acquire(out, lock)
    except OSError as exc:
        _remove_created(created)
        raise ValueError(f"output folder {_shown(out)}: cannot write its lock file "
                         f"({exc.strerror or exc})") from None
    except BaseException:
        _remove_created(created)
        raise
    with _guard:
        _held[key] = 1
    try:
        yield out
    finally:
        with _guard:
            _held.pop(key, None)
        _release(lock, fd)
        _remove_created(created)


def _remove_created(created: List[Path]) -> None:
    for p in created:  # innermost first; only folders that are still empty
        try:
            p.rmdir()
        except OSError:
            break
