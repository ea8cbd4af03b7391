"""The harness's own state on disk (`.agentcache/`): real directories and regular files only, opened without
following a symbolic link or waiting on a FIFO, and read up to a stated size."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from agentcache.errors import AgentcacheError

STATE_DIR = ".agentcache"
MAX_STATE_FILE_BYTES = 64 << 20  # a session file larger than this is refused, not read

_KINDS = {stat.S_IFLNK: "a symbolic link", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket",
          stat.S_IFCHR: "a device", stat.S_IFBLK: "a device", stat.S_IFDIR: "a directory"}
_OPEN_ERRORS = {errno.ELOOP: "a symbolic link", errno.ENXIO: "a FIFO or socket", errno.EISDIR: "a directory"}


def kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def real_dir(path: Path, create: bool = False) -> Path:
    """path when it is a directory itself (not a link to one); made 0700 when missing and `create`."""
    if create:
        try:
            os.mkdir(path, 0o700)  # never follows a link in path's last part: an existing link is EEXIST
        except FileExistsError:
            pass
        except OSError as exc:
            raise AgentcacheError(f"cannot create {path}: {exc.strerror or exc}") from None
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        raise AgentcacheError(f"{path} does not exist") from None
    except OSError as exc:
        raise AgentcacheError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(mode):
        raise AgentcacheError(f"{path} is {kind(mode)}, not a directory; the harness keeps its state only in a real "
                              "directory")
    return path


def state_dirs(directory: Path, create: bool = False) -> Path | None:
    """`directory` (<repo>/.agentcache/<name>) once it and its `.agentcache` parent are real directories; None when
    one of them is missing and not to be created."""
    for path in (directory.parent, directory):
        if not create and not os.path.lexists(path):
            return None
        real_dir(path, create)
    return directory


def private_dir(path: Path) -> None:
    """chmod 0700 through a descriptor of the directory itself, so a link swapped in meanwhile is never followed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise AgentcacheError(f"{path} is not a real directory ({exc.strerror or exc})") from None
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def open_regular(path: Path, flags: int, what: str) -> int:
    """A descriptor of path when path itself is a regular file: a link is not followed, a FIFO not waited on, and
    anything but a regular file is refused with one line."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        raise AgentcacheError(f"{what} {path} does not exist") from None
    except OSError as exc:
        why = _OPEN_ERRORS.get(exc.errno)
        detail = f"is {why}, not a regular file" if why else f"cannot be opened ({exc.strerror or exc})"
        raise AgentcacheError(f"{what} {path} {detail}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise AgentcacheError(f"{what} {path} is {kind(mode)}, not a regular file")
    return fd


def read_capped(fd: int, what: str, cap: int = MAX_STATE_FILE_BYTES) -> bytes:
    """The whole file behind fd, refused when it is (or grows while read) larger than cap."""
    too_big = AgentcacheError(f"{what} is larger than {cap >> 20} MiB; refused")
    if os.fstat(fd).st_size > cap:
        raise too_big
    chunks, size = [], 0
    while chunk := os.read(fd, min(1 << 20, cap + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            raise too_big
    return b"".join(chunks)
