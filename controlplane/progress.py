"""A one-line progress bar for long management commands, drawn only on a terminal.

A bar is for a person watching: piped into a file or a log it would be noise
(carriage returns, a thousand redraws), so ``ProgressBar`` draws nothing unless
its stream is a TTY. Summaries are the commands' own business and always print.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import OutputWrapper

WIDTH = 40
# Redraws happen when the bar moves by a thousandth: a month of minutes is 1,000 writes, not 44,640.
_STEPS = 1000


def bar_line(done: int, total: int, *, width: int = WIDTH, detail: str = "") -> str:
    """``[#####.....] done/total detail``; a total of 0 draws an empty bar."""
    filled = min(width, width * done // total) if total > 0 else 0
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}" + (f" {detail}" if detail else "")


def is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)  # Django's OutputWrapper passes isatty to the real stream
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class ProgressBar:
    """Redraws ``bar_line`` in place on ``stream`` (a TTY only, unless ``enabled`` says otherwise)."""

    def __init__(self, stream: Any, total: int, *, label: str = "", enabled: bool | None = None) -> None:
        self.stream, self.total, self.label = stream, total, label
        self.enabled = is_terminal(stream) if enabled is None else enabled
        self._step = -1
        self._drawn = False

    def update(self, done: int, detail: str = "") -> None:
        step = _STEPS * done // self.total if self.total > 0 else _STEPS
        if not self.enabled or (step == self._step and done != self.total):
            return
        self._step = step
        prefix = f"{self.label} " if self.label else ""
        self._write(f"\r\x1b[K{prefix}{bar_line(done, self.total, detail=detail)}")
        self._drawn = True

    def clear(self) -> None:
        """Wipe the bar so another line can be printed on the terminal; the next update redraws it."""
        if self._drawn:
            self._write("\r\x1b[K")
            self._drawn, self._step = False, -1

    def _write(self, text: str) -> None:
        if isinstance(self.stream, OutputWrapper):
            self.stream.write(text, style_func=str, ending="")  # no newline, and not stderr's red
        else:
            self.stream.write(text)
        self.stream.flush()
