"""The controlling terminal for the nodes an operator types into (``gato-teleop``'s keyboard source, the recorder's
operator console): cbreak mode, keys polled without a thread, a status line, the terminal restored on every exit."""

from __future__ import annotations

import atexit
import os
import select
import termios
import tty


class Terminal:
    """The controlling terminal (``fd``) in cbreak mode: keys arrive one by one without echo, and the terminal's
    own Ctrl-C still raises SIGINT (``common.run``'s stop flag: the terminal is restored on that path too). cbreak
    rather than full raw mode so the ROS log lines keep their newlines. :meth:`restore` runs from ``on_exit``,
    ``destroy_node`` and ``atexit``, whichever comes first; only SIGKILL skips it (then ``stty sane``)."""

    def __init__(self, fd: int, not_a_tty: str = "stdin is not a terminal") -> None:
        if not os.isatty(fd):
            raise RuntimeError(not_a_tty)
        self.fd = fd
        self.saved: list | None = termios.tcgetattr(fd)
        tty.setcbreak(fd, termios.TCSANOW)
        atexit.register(self.restore)
        self.closed = False

    def read(self) -> bytes | None:
        """Bytes typed since the last call (b'' when none); None when the terminal is gone (EOF, hang-up)."""
        if self.closed:
            return None
        try:
            ready, _, _ = select.select([self.fd], [], [], 0)
            if not ready:
                return b""
            data = os.read(self.fd, 1024)
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return None
        return data

    def status(self, text: str) -> None:
        """Rewrite the status line in place."""
        self._write(f"\r\x1b[K{text}")

    def say(self, text: str) -> None:
        """A line of its own above the status line (which the next :meth:`status` redraws)."""
        self._write(f"\r\x1b[K{text}\n")

    def _write(self, text: str) -> None:
        """Skipped when the terminal is gone or would block (nobody reading a pty)."""
        if self.closed:
            return
        try:
            _, writable, _ = select.select([], [self.fd], [], 0)
            if writable:
                os.write(self.fd, text.encode())
        except OSError:
            pass

    def restore(self) -> None:
        if self.saved is None:
            return
        saved, self.saved = self.saved, None
        try:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, saved)
            if not self.closed:
                os.write(self.fd, b"\r\x1b[K")
        except (OSError, termios.error):
            pass
