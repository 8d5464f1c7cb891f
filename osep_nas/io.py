"""File input and output.

Output is atomic: write to a temporary file in the same folder, then rename, so a crash
never leaves a half-written file and a failed write never touches an existing one.  Input of
a user's file goes through ONE bounded reader, :func:`read_user_bytes` (and
:func:`read_user_text`): only regular files, read without blocking and at most
``max_bytes + 1`` bytes, every refusal one line, so no input can hang a command or fill the
memory.  See docs/security.md.
"""
from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]

_UMASK = os.umask(0)
os.umask(_UMASK)

#: default limit of :func:`read_user_text`: configs, genotypes, search spaces (1 MiB)
MAX_TEXT_BYTES = 1 << 20


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _check_limit(max_bytes: int) -> int:
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
        raise ValueError(f"max_bytes must be an integer >= 0, got {max_bytes!r}")
    return max_bytes


def _shown(path: PathLike, what: str) -> str:
    try:
        shown = os.fspath(path)
    except TypeError:
        raise ValueError(f"{what}: expected a path, got {type(path).__name__}") from None
    if isinstance(shown, bytes):
        shown = os.fsdecode(shown)
    if not shown:
        raise ValueError(f"{what}: the path is empty")
    return shown


def _check_stat(shown: str, st: os.stat_result, max_bytes: int, what: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{what} {shown} is {_kind(st.st_mode)}, not a regular file")
    if st.st_size > max_bytes:
        raise ValueError(f"{what} {shown} is too large ({st.st_size:,} bytes; at most {max_bytes:,} are read)")


def check_user_file(path: PathLike, max_bytes: int = MAX_TEXT_BYTES, what: str = "file") -> Path:
    """``path`` as a Path once it is known to be an existing regular file of at most
    ``max_bytes`` bytes (for readers that take a path, such as sqlite); the errors of
    :func:`read_user_bytes`.  Nothing is opened."""
    _check_limit(max_bytes)
    shown = _shown(path, what)
    try:
        st = os.stat(shown)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {shown}") from None
    except NotADirectoryError:
        raise FileNotFoundError(f"{what} not found: {shown} (a part of the path is not a folder)") from None
    except PermissionError:
        raise PermissionError(f"{what} {shown}: permission denied") from None
    except (OSError, ValueError) as exc:  # name too long, embedded NUL, loops of links
        raise ValueError(f"{what} {shown}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    _check_stat(shown, st, max_bytes, what)
    return Path(shown)


@contextlib.contextmanager
def open_user_file(path: PathLike, max_bytes: int = MAX_TEXT_BYTES, what: str = "file") -> Iterator[IO[bytes]]:
    """The user's file ``path`` opened for binary reading, once :func:`check_user_file`
    holds, opened without blocking and checked again on the open descriptor (a file
    swapped for a pipe in between is refused).  For readers that stream (``torch.load``,
    unpicklers); everyone else calls :func:`read_user_bytes`."""
    shown = str(check_user_file(path, max_bytes, what))
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(shown, flags)
    except PermissionError:
        raise PermissionError(f"{what} {shown}: permission denied") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {shown}") from None
    except OSError as exc:
        raise ValueError(f"{what} {shown}: cannot be opened ({exc.strerror or exc})") from None
    try:
        _check_stat(shown, os.fstat(fd), max_bytes, what)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # a regular file: blocking reads, as file objects expect
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as fh:
        yield fh


def refuse_special_file(path: PathLike, what: str = "file") -> None:
    """ValueError when ``path`` names an existing device, pipe or socket (what
    :func:`read_user_bytes` refuses anyway); nothing for a regular file, a folder or a
    missing path, which the command's own reader judges.  A cheap early check."""
    try:
        st = os.stat(os.fspath(path))
    except (OSError, ValueError, TypeError):
        return
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise ValueError(f"{what} {os.fspath(path)} is {_kind(st.st_mode)}, not a regular file")


def read_user_bytes(path: PathLike, max_bytes: int = MAX_TEXT_BYTES, what: str = "file") -> bytes:
    """The bytes of the user's file ``path``, at most ``max_bytes`` of them.

    ``what`` names the file in messages (``"genotype file"``, ``"checkpoint"``).
    FileNotFoundError when ``path`` does not exist; PermissionError when it cannot be
    read; ValueError (one line naming the path) when it is a folder, a device, a pipe
    or a socket, or holds more than ``max_bytes`` bytes (also when it grows while being
    read, or its size lies, as for files under /proc).  Never blocks on a special file."""
    with open_user_file(path, max_bytes, what) as fh:
        try:
            data = fh.read(max_bytes + 1)
        except OSError as exc:
            raise ValueError(f"{what} {_shown(path, what)}: read failed ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise ValueError(f"{what} {_shown(path, what)} is too large (more than {max_bytes:,} bytes)")
    return data


def read_user_text(path: PathLike, max_bytes: int = MAX_TEXT_BYTES, what: str = "file") -> str:
    """:func:`read_user_bytes` decoded as UTF-8 (a leading BOM dropped); ValueError
    naming the path and the first bad byte when it is not UTF-8 text."""
    data = read_user_bytes(path, max_bytes, what)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} {os.fspath(path)}: not UTF-8 text (byte {exc.start})") from None


class WriteFailed(OSError, ValueError):
    """An output file could not be written: disk full (ENOSPC), I/O error (EIO), quota,
    read-only file system...  ``errno`` is the system's; the message is one line naming
    the file and says that its previous content is unchanged.  Also a ValueError, so the
    command line reports it as one line with exit status 2."""

    def __str__(self) -> str:
        return str(self.strerror)


def _os_error(exc: BaseException) -> Optional[OSError]:
    """The OSError behind ``exc`` (torch.save reports a failed write as a RuntimeError
    whose context is the OSError), or None."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _write_failed(path: PathLike, err: OSError, what: str) -> WriteFailed:
    reason = err.strerror or " ".join(str(err).split()) or type(err).__name__
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in os.fspath(path))
    return WriteFailed(err.errno or 0, f"cannot write {shown}: {reason}; {what}")


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success fsync and rename it over ``path``.

    A failed write (disk full, I/O error, at any step: the temporary file, the writes,
    fsync, the rename) removes the temporary file, leaves ``path`` as it was and raises
    :class:`WriteFailed`."""
    path = Path(path)
    if not path.parent.exists():
        raise FileNotFoundError(f"output folder does not exist: {path.parent}")
    binary = "b" in mode
    kept = "the previous file is unchanged" if path.exists() else "nothing was written"
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if isinstance(exc, (FileNotFoundError, PermissionError)):
            raise
        raise _write_failed(path, exc, kept) from None
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual file mode
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        err = _os_error(exc)
        if err is None or isinstance(err, (WriteFailed, FileNotFoundError, PermissionError)) \
                or not isinstance(exc, (OSError, RuntimeError)):
            raise
        raise _write_failed(path, err, kept) from None


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_json(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_jsonl(path: PathLike, record: dict) -> None:
    """Append one JSON line and flush it to disk (a log line is either whole or absent).

    A failed append (disk full, I/O error) cuts the file back to its previous length
    and raises :class:`WriteFailed`: the lines before stay as they were."""
    data = (json.dumps(record, sort_keys=False) + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
            raise
        raise _write_failed(path, exc, "nothing was written") from None
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)  # no torn line left behind
            raise _write_failed(path, exc, "the lines before are unchanged") from None
    finally:
        os.close(fd)
