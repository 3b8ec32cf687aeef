"""Small file-system and process helpers shared by the package: one way to do each.

- :func:`atomic_write` / :func:`atomic_path`: write a file to a temporary beside it, ``fsync`` it and
  rename it into place, so a reader sees the old file or the new one, never half of one.
- :func:`file_lock`: an inter-process lock on a file (the ``filelock`` package), e.g. to serialise two
  first starts that prepare the same cache folder.
- :func:`staging_name` / :func:`remove_stale_staging` / :func:`remove_leftovers`: staging folders named
  after the process that writes them (``.NAME.partial-<pid>-<random>``), so the next run can remove
  those of killed runs without touching the one a live process is still writing;
  :func:`replace_folder` swaps a finished staging folder onto its target without a moment where the
  only good copy sits where a later run would delete it.
- :func:`file_checksum`: a fast checksum (xxHash's XXH3-64, about 10 GB/s) of a file, as recorded in an
  index's manifest (index/README.md, "Integrity").
- :func:`check_port`: whether a server can listen on an address and port, asked before any model loads;
  :func:`bind_port`: the same bind, kept (``attnflows serve`` holds its port with it).
- :func:`status`: the one-line status messages of long jobs (fine-tuning, indexing, preparing) go through
  :mod:`logging` (logger ``attnflows_panel.<module>``); with ``progress=True`` and no logging configured
  they appear on stderr as ``[attnflows <module>] message``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "tcp_unreachable",
    "quiet_transformers",
    "atomic_path",
    "atomic_write",
    "atomic_write_json",
    "file_lock",
    "staging_name",
    "remove_stale_staging",
    "remove_stale_tmp",
    "remove_leftovers",
    "replace_folder",
    "file_checksum",
    "CHECKSUM_ALGORITHM",
    "PortError",
    "bind_port",
    "check_port",
    "check_writable",
    "status",
    "configure_cli_logging",
]

log = logging.getLogger(__name__)

#: the checksum an index manifest records per file (see :func:`file_checksum`)
CHECKSUM_ALGORITHM = "xxh3_64"


# --------------------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------------------


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to (by any means, e.g. ``faiss.write_index``); when the
    block ends without an error the file is flushed to disk and renamed onto ``path``, otherwise removed."""
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[BinaryIO], Any]) -> None:
    """Write ``data`` (bytes, text as UTF-8, or a function that writes to a binary file object) to
    ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        if callable(data):
            data(fh)
        else:
            fh.write(data.encode() if isinstance(data, str) else data)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """``obj`` as indented JSON (values JSON cannot hold are written with ``str``), atomically."""
    atomic_write(path, json.dumps(obj, indent=2, default=str) + "\n")


def remove_stale_tmp(folder: str | os.PathLike) -> int:
    """Remove ``.*.tmp-<pid>-*`` files of :func:`atomic_write` left in ``folder`` by dead processes."""
    removed = 0
    for p in Path(folder).glob(".*.tmp-*"):
        if _writer_dead(p.name.rsplit(".tmp-", 1)[-1]):
            with contextlib.suppress(OSError):
                p.unlink()
                removed += 1
    return removed


def check_writable(folder: str | os.PathLike, what: str = "--out") -> None:
    """Raise PermissionError (naming ``what`` and the folder) unless a file can be created where
    ``folder`` is or will be: checked before hours of work, not after. Creates no folder."""
    folder = Path(folder).expanduser().absolute()
    probe_in = folder
    while not probe_in.exists():
        if probe_in.parent == probe_in:
            break
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise NotADirectoryError(f"{what} {str(folder)!r}: {str(probe_in)!r} is a file, not a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=".attnflows-write-check-", dir=probe_in)
    except PermissionError:
        raise PermissionError(
            errno.EACCES, f"{what} {str(folder)!r} is not writable (no permission to create files in "
                          f"{str(probe_in)!r}); choose another folder", str(folder)) from None
    except OSError as exc:
        if exc.errno == errno.EROFS:
            raise OSError(errno.EROFS, f"{what} {str(folder)!r} is on a read-only file system; choose another folder",
                          str(folder)) from None
        raise
    os.close(fd)
    os.unlink(name)


# --------------------------------------------------------------------------------------------------
# locks and staging folders
# --------------------------------------------------------------------------------------------------


def file_lock(path: str | os.PathLike, timeout: float = -1):
    """An inter-process lock on ``path`` (created if needed), as a context manager (``filelock.FileLock``).

    ``timeout`` seconds to wait, -1 = wait as long as it takes."""
    from filelock import FileLock

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path), timeout=timeout)


def staging_name(target: str | os.PathLike) -> Path:
    """A fresh staging path beside ``target``: ``.NAME.partial-<pid>-<random>``."""
    target = Path(target)
    return target.with_name(f".{target.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _writer_dead(tail: str) -> bool:
    """Whether the process named at the start of a staging suffix (``<pid>-<random>``) is gone."""
    try:
        pid = int(tail.split("-", 1)[0])
    except ValueError:
        return True  # an older naming scheme (no pid): nothing can be writing it any more
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    except OSError:
        return False
    return False


def remove_stale_staging(target: str | os.PathLike) -> list[Path]:
    """Remove the staging folders (``.NAME.partial-*``, ``.NAME.old-*``) that killed runs left beside
    ``target``; the ones of live processes on this machine stay. Returns what was removed.

    A ``.NAME.old-*`` folder is the previous ``target``, moved aside by :func:`replace_folder` where no
    atomic exchange exists: when ``target`` itself is missing, the run died between its two renames and
    that folder is the only good copy, so it is put back as ``target`` instead of being removed."""
    target = Path(target)
    removed: list[Path] = []
    if not target.parent.is_dir():
        return removed
    for kind in ("old", "partial"):
        for p in sorted(target.parent.glob(f".{target.name}.{kind}-*")):
            if not _writer_dead(p.name[len(f".{target.name}.{kind}-"):]):
                continue
            if kind == "old" and not os.path.lexists(target):
                with contextlib.suppress(OSError):
                    os.replace(p, target)
                    log.warning("restored %s from %s, left by a run that was stopped while replacing it", target, p)
                    continue
            _remove_path(p)
            removed.append(p)
            log.info("removed %s, left by a run that was stopped", p)
    return removed


def _remove_path(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            p.unlink()


_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old|tmp)-(?P<tail>\d+-[0-9a-f]+)$")


def remove_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Remove every staging folder and temporary file of :func:`staging_name` / :func:`atomic_path` that a
    dead process left in ``folder`` (not in its sub-folders): ``.NAME.partial-<pid>-*``,
    ``.NAME.tmp-<pid>-*``, and ``.NAME.old-<pid>-*`` (put back as NAME where NAME is missing, see
    :func:`remove_stale_staging`). Every run that writes into a cache or an index folder calls it, under
    the folder's lock, so that leftovers of a killed run do not wait for the same command to run again."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    targets = set()
    for p in folder.iterdir():
        m = _LEFTOVER.match(p.name)
        if m is None:
            continue
        if m.group("kind") == "tmp":
            if _writer_dead(m.group("tail")):
                _remove_path(p)
                removed.append(p)
                log.info("removed %s, left by a run that was stopped", p)
        else:
            targets.add(folder / m.group("name"))
    for target in sorted(targets):
        removed += remove_stale_staging(target)
    return removed


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Swap the two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # an old kernel or a file system without it: the two-rename fallback
    raise OSError(code, os.strerror(code), str(b))


def replace_folder(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put the finished folder ``new`` (a staging folder beside ``target``) at ``target``.

    An existing ``target`` is exchanged with ``new`` in one atomic step where the system can (Linux),
    so that ``target`` always holds a whole folder, the old or the new; the old one, now at ``new``'s
    name, is then removed. Elsewhere the old folder is renamed to ``.NAME.old-<pid>-*`` first: a run that
    dies between the two renames leaves it there, and the next run puts it back
    (:func:`remove_stale_staging`) rather than deleting the only good copy."""
    new, target = Path(new), Path(target)
    if not os.path.lexists(target):
        os.replace(new, target)
        return
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
        os.replace(new, target)
        return
    if _renameat2_exchange(new, target):
        _remove_path(new)  # the old folder, now under the staging name (of this live process)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    _remove_path(old)


def current_umask() -> int:
    """The process's umask, read without changing it where the system tells (Linux), else by the
    set-and-restore idiom."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_readable_like_new_files(folder: str | os.PathLike) -> None:
    """Give ``folder`` and everything in it the permissions new files and folders get (0666 / 0777
    less the umask): writers such as safetensors create their files 0600, which a server running as
    another user cannot read."""
    mask = current_umask()
    folder = Path(folder)
    os.chmod(folder, 0o777 & ~mask)
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o777 & ~mask)
        for f in files:
            os.chmod(os.path.join(root, f), 0o666 & ~mask)


# --------------------------------------------------------------------------------------------------
# checksums
# --------------------------------------------------------------------------------------------------


def file_checksum(path: str | os.PathLike, chunk: int = 16 << 20) -> str:
    """The XXH3-64 checksum of a file's bytes, as 16 hex digits (:data:`CHECKSUM_ALGORITHM`).

    Not cryptographic: it finds flipped bits and truncation (what disks and copies do), at about
    10 GB/s from the page cache."""
    import xxhash

    h = xxhash.xxh3_64()
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(chunk)
        view = memoryview(buf)
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            h.update(view[:n])
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# ports
# --------------------------------------------------------------------------------------------------


class PortError(OSError):
    """A server cannot listen on the address and port asked for."""


def check_port(address: str | None, port: int) -> None:
    """Raise :class:`PortError` with a clear message unless a server can listen on ``address:port``.

    ``port`` 0 means "pick a free one" and is always fine. ``address`` None means all interfaces.
    Cheap (one bind, closed at once), so it runs before any model loads."""
    bind_port(address, port).close()


def bind_port(address: str | None, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A socket bound to ``address:port`` (not listening), or :class:`PortError` with a clear message
    (:func:`check_port`'s messages). ``reuse_port`` sets ``SO_REUSEPORT`` (Linux), so that other
    sockets with it may bind the same port: ``attnflows serve`` holds its port this way while its
    worker processes start, each of which then listens on a socket of its own."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise PortError(f"--port must be a number from 0 to 65535 (0 picks a free one), got {port!r}")
    host = address or "0.0.0.0"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise PortError(f"--address {address!r} is not an address of this machine ({exc.strerror})") from None
    family, kind, proto, _, sockaddr = infos[0]
    s = socket.socket(family, kind, proto)
    try:
        if os.name != "nt":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Tornado does: TIME_WAIT is no conflict
        if reuse_port:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(sockaddr)
    except OSError as exc:
        s.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortError(
                f"port {port} on {host} is already in use; stop the other server or choose another --port "
                "(--port 0 picks a free one)"
            ) from None
        if exc.errno == errno.EACCES:
            raise PortError(
                f"no permission to listen on port {port} (ports below 1024 need administrator rights); "
                "choose a port above 1023"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise PortError(f"--address {address!r} is not an address of this machine") from None
        raise PortError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    except BaseException:
        s.close()
        raise
    return s


# --------------------------------------------------------------------------------------------------
# status lines
# --------------------------------------------------------------------------------------------------


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (tests and notebooks replace it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class _TagFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        tag = record.name.rsplit(".", 1)[-1]
        return f"[attnflows {tag}] {record.getMessage()}"


_PACKAGE_LOGGER = "attnflows_panel"


def _ensure_handler() -> None:
    """With logging not configured at all, give the package's logger a stderr handler at INFO level,
    so that status lines asked for with ``progress=True`` are seen. A configured application keeps
    full control (its handlers and levels decide)."""
    pkg = logging.getLogger(_PACKAGE_LOGGER)
    if pkg.handlers or logging.getLogger().handlers:
        return
    handler = _StderrHandler()
    handler.setFormatter(_TagFormatter())
    handler.setLevel(logging.INFO)
    pkg.addHandler(handler)
    if pkg.level == logging.NOTSET:
        pkg.setLevel(logging.INFO)


def configure_cli_logging(debug: bool = False) -> None:
    """What the ``attnflows`` command does first: the package's status lines on stderr (INFO, or DEBUG
    with ``--debug``), once, whatever else is configured."""
    pkg = logging.getLogger(_PACKAGE_LOGGER)
    handler = next((h for h in pkg.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        handler.setFormatter(_TagFormatter())
        pkg.addHandler(handler)
    level = logging.DEBUG if debug else logging.INFO
    handler.setLevel(level)
    pkg.setLevel(level)


def status(logger: logging.Logger, progress: bool, message: str, *args: Any) -> None:
    """A status line of a long job: INFO when ``progress`` (shown on stderr unless logging is configured
    otherwise), DEBUG when not."""
    if progress:
        _ensure_handler()
        logger.info(message, *args)
    else:
        logger.debug(message, *args)


@contextlib.contextmanager
def quiet_transformers(bars: bool):
    """Silence transformers' warnings and load report for this block (we report what matters
    ourselves); its progress bars stay on only if ``bars``."""
    from transformers.utils import logging as hf_logging

    verbosity, bars_before = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    if not bars:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars_before and not bars:
            hf_logging.enable_progress_bar()


def tcp_unreachable(host: str, port: int, timeout: float, name: str = "attnflows-probe") -> str | None:
    """Why nothing answers a TCP connect to ``host:port`` within ``timeout`` seconds (DNS included), or
    None when something listens. The connect runs in a helper thread, since name resolution takes no
    timeout of its own."""
    import threading

    result: list[str | None] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(None)
        except OSError as exc:
            result.append(exc.strerror or str(exc))

    worker = threading.Thread(target=probe, name=name, daemon=True)
    worker.start()
    worker.join(timeout + 1.0)
    return result[0] if result else f"no answer within {timeout:.0f} s"
