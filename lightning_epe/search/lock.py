"""One writer per results directory: an exclusive lock file holding the holder's pid, host and start.

Every command that writes into a results directory holds its lock for the whole read-modify-write::

    with DirectoryLock(directory):
        ...  # read, decide, write

(``ResultsStore`` takes it for a search; ``ArchitectureSearch.fit`` to read what it trains and to record it.)
"""
from __future__ import annotations

import datetime
import errno
import json
import os
import socket
from pathlib import Path

LOCK = "lock"


class ResultsDirectoryBusy(RuntimeError):
    """Another live process holds the lock of a results directory."""


class DirectoryLock:
    """An exclusive lock on a results directory: the file ``lock`` holds the holder's pid and host.

    Taken with ``fcntl.flock`` (the kernel releases it when the holder dies, however it dies, so a
    lock file left by a killed process is stale and simply taken over); where ``fcntl`` is missing
    (Windows), the file is created exclusively and a holder on this host that no longer runs is
    taken over. The file is removed when the lock is released. A context manager: ``with
    DirectoryLock(directory):`` holds it inside. If taking it fails after the file was opened (a full disk
    while writing the holder), nothing stays held, also in a long-lived process.
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory / LOCK
        self._fd: int | None = None
        self.taken_over: dict | None = None  # the holder a stale lock file named

    @staticmethod
    def holder() -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(),
                "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}

    def _read(self, fd: int | None = None) -> dict | None:
        try:
            if fd is not None:
                os.lseek(fd, 0, os.SEEK_SET)
                text = os.read(fd, 4096).decode("utf-8", "replace")
            else:
                text = self.path.read_text(errors="replace")
            data = json.loads(text) if text.strip() else None
            return data if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None

    def _busy(self, holder: dict | None) -> ResultsDirectoryBusy:
        who = ("another process" if holder is None else
               f"pid {holder.get('pid')} on host {holder.get('host')} since {holder.get('since')}")
        return ResultsDirectoryBusy(
            f"results directory {str(self.directory)!r} is in use by another search ({who}; lock file "
            f"{self.path}). Two writers would score every trial twice: wait for it to finish (then run the "
            "same command to resume), or choose another results directory (results_dir=, --results_dir)."
        )

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover (Windows)
            return self._acquire_exclusive_create()
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = self._read(fd)
                os.close(fd)
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise self._busy(holder) from None
                raise
            try:  # the previous holder may have removed the file between our open and our flock
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            self.taken_over = self._read(fd)  # left by a process that died holding it
            try:
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, (json.dumps(self.holder()) + "\n").encode())
                os.fsync(fd)
            except OSError as err:  # (disk full): let go of the file, so that nothing stays locked
                self._let_go(fd)
                raise self._unwritable(err) from err
            self._fd = fd
            return None
        raise self._busy(self._read())  # pragma: no cover (the file kept being replaced)

    def _acquire_exclusive_create(self) -> None:  # pragma: no cover (Windows)
        for _ in range(100):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._read()
                if holder and holder.get("host") == socket.gethostname() and not _alive(holder.get("pid")):
                    self.taken_over = holder
                    self.path.unlink(missing_ok=True)
                    continue
                raise self._busy(holder) from None
            try:
                os.write(fd, (json.dumps(self.holder()) + "\n").encode())
            except OSError as err:
                self._let_go(fd)
                raise self._unwritable(err) from err
            self._fd = fd
            return
        raise self._busy(self._read())

    def _unwritable(self, err: OSError) -> OSError:
        why = ("the disk is full (or over quota)" if err.errno in (errno.ENOSPC, errno.EDQUOT)
               else err.strerror or str(err))
        return OSError(err.errno, f"could not take the lock of results directory {str(self.directory)!r}: writing "
                                  f"{self.path} failed ({why}); nothing was written or is held. Free space (or fix "
                                  "the directory) and run the same command again.")

    def _let_go(self, fd: int) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            os.close(fd)

    def __enter__(self) -> "DirectoryLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # still holding it: nobody else can hold this file now
        finally:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _alive(pid) -> bool:  # pragma: no cover (Windows fallback)
    try:
        os.kill(int(pid), 0)
    except (OSError, TypeError, ValueError):
        return False
    return True
