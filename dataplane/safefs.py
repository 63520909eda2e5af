"""Names that become paths, and removals confined to what this process made.

A config value that names a file (EAL's ``file_prefix``) must be a plain name:
``..`` or ``a/b`` would let a shutdown's clean-up reach outside its directory.
And a clean-up removes only a directory that this process created, checked by
device and inode when it is removed, walked through directory descriptors that
never follow a symbolic link (a directory swapped or linked in meanwhile is
left alone).
"""
from __future__ import annotations

import errno
import fnmatch
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Leading letter or digit: no dot names, no option-looking "-x"; no separators.
PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def check_plain_name(value: str) -> str:
    """``value`` if it is a plain file name (no separators, not . or ..)."""
    if not PLAIN_NAME.match(value):
        raise ValueError(f"'{value}' is not a plain name: 1-64 of A-Z a-z 0-9 _ . -, "
                         "starting with a letter or digit (no '/', no '.' or '..')")
    return value


@dataclass(frozen=True)
class OwnedDir:
    """A directory this process uses, by path and identity (st_dev, st_ino).
    ``only``: the glob patterns of the entries in it that are ours (a
    directory that was there before us); None: all of it is (we made it)."""
    path: Path
    dev: int
    ino: int
    only: tuple[str, ...] | None = None

    @classmethod
    def adopt(cls, path: Path, existed_before: bool,
              ours_inside: tuple[str, ...] = ()) -> "OwnedDir | None":
        """The real directory at ``path``, owned by us. Made by us (or by a
        library on our behalf, like EAL) when it did not exist before: all of
        it is ours. Otherwise only its entries matching ``ours_inside`` are
        (none when empty: None, nothing to remove)."""
        if existed_before and not ours_inside:
            return None
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            return None
        return cls(Path(path), st.st_dev, st.st_ino, ours_inside if existed_before else None)

    def remove(self, tree: bool = True) -> bool:
        """Remove the directory (with everything in it when ``tree``; else
        only if it is empty) if the path still names this very directory.
        True when it is gone; False (and a log line) when it was not ours."""
        try:
            parent = os.open(self.path.parent, _DIR_FLAGS & ~os.O_NOFOLLOW)
        except OSError:
            return False
        try:
            name = self.path.name
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    log.warning("%s: not removed: %s", self.path, e.strerror)
                return False
            try:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != (self.dev, self.ino):
                    log.warning("%s: not removed: it is no longer the directory this process made",
                                self.path)
                    return False
                if tree:
                    _empty(fd, self.only)
            finally:
                os.close(fd)
            try:  # the same directory still, now empty: rmdir takes only an empty one
                st = os.lstat(name, dir_fd=parent)
                if (st.st_dev, st.st_ino) == (self.dev, self.ino):
                    os.rmdir(name, dir_fd=parent)
                    return True
            except OSError as e:
                if e.errno != errno.ENOTEMPTY or (tree and self.only is None):
                    log.warning("%s: not removed: %s", self.path, e.strerror)
            return False
        finally:
            os.close(parent)


def _empty(dirfd: int, only: tuple[str, ...] | None = None) -> None:
    """Remove everything inside the directory open at ``dirfd`` (at its top,
    only the entries matching ``only``), through descriptors only: a symbolic
    link is unlinked, never followed."""
    for entry in list(os.scandir(dirfd)):
        if only is not None and not any(fnmatch.fnmatchcase(entry.name, p) for p in only):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                sub = os.open(entry.name, _DIR_FLAGS, dir_fd=dirfd)
                try:
                    _empty(sub)
                finally:
                    os.close(sub)
                os.rmdir(entry.name, dir_fd=dirfd)
            else:
                os.unlink(entry.name, dir_fd=dirfd)
        except FileNotFoundError:
            pass
