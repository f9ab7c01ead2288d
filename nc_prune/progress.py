"""A minimal progress bar for long work (demo training, one-shot pruning over blocks).

It draws on standard error only when that is a terminal, so logs, pipes and CI output stay clean. It is
also silent when ``enabled=False`` is passed or the environment sets ``NC_PRUNE_PROGRESS=0``; with
``NC_PRUNE_PROGRESS=1`` it draws even when standard error is not a terminal.

>>> from nc_prune.progress import progress
>>> total = 0
>>> for i in progress(range(5), desc="summing", enabled=False):
...     total += i
>>> total
10
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")

ENV_VAR = "NC_PRUNE_PROGRESS"


def progress_enabled(enabled: Optional[bool] = None, stream: Optional[IO[str]] = None) -> bool:
    """Whether a bar should be drawn.

    An explicit ``enabled=False`` always wins; then ``NC_PRUNE_PROGRESS=0`` (off) or ``=1`` (on);
    otherwise a bar is drawn only when ``stream`` (standard error by default) is a terminal.
    """
    if enabled is False:
        return False
    env = os.environ.get(ENV_VAR, "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if env in ("1", "true", "yes", "on"):
        return True
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class ProgressBar:
    """A one-line bar: ``desc |#####-----| 12/40 [3.1s, 3.9 it/s] postfix``.

    Args:
        total: how many updates make 100 %; ``None`` shows a counter without a bar.
        desc: a label in front of the bar.
        enabled: ``False`` silences the bar; ``None`` decides by :func:`progress_enabled`.
        stream: where to draw (standard error by default).
        width: characters of the bar itself.
        min_interval: seconds between redraws (the last update always draws).

    Use it as a context manager, or call :meth:`close` when done.
    """

    def __init__(self, total: Optional[int] = None, desc: str = "", enabled: Optional[bool] = None,
                 stream: Optional[IO[str]] = None, width: int = 24, min_interval: float = 0.1) -> None:
        self.total = total
        self.desc = desc
        self.stream = sys.stderr if stream is None else stream
        self.enabled = progress_enabled(enabled, self.stream)
        self.width = width
        self.min_interval = min_interval
        self.n = 0
        self.postfix = ""
        self._start = time.monotonic()
        self._last_draw = -float("inf")
        self._drawn_width = 0
        self._closed = False

    def update(self, n: int = 1, postfix: Optional[str] = None) -> None:
        """Advance by ``n`` and redraw (at most every ``min_interval`` seconds)."""
        self.n += n
        if postfix is not None:
            self.postfix = postfix
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last_draw >= self.min_interval or (self.total is not None and self.n >= self.total):
            self._draw(now)

    def set_postfix(self, text: str) -> None:
        """Text shown after the counters (for example the current loss)."""
        self.postfix = text

    def render(self, now: Optional[float] = None) -> str:
        """The line the bar draws (without the carriage return)."""
        elapsed = (time.monotonic() if now is None else now) - self._start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        parts = [self.desc] if self.desc else []
        if self.total:
            frac = min(self.n / self.total, 1.0)
            filled = int(round(frac * self.width))
            parts.append("|" + "#" * filled + "-" * (self.width - filled) + "|")
            parts.append(f"{self.n}/{self.total}")
        else:
            parts.append(str(self.n))
        parts.append(f"[{elapsed:.1f}s, {rate:.1f} it/s]")
        if self.postfix:
            parts.append(self.postfix)
        return " ".join(parts)

    def _draw(self, now: float) -> None:
        line = self.render(now)
        pad = max(self._drawn_width - len(line), 0)
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._drawn_width = len(line)
        self._last_draw = now

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self._closed:
            return
        self._closed = True
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(iterable: Iterable[T], total: Optional[int] = None, desc: str = "",
             enabled: Optional[bool] = None, stream: Optional[IO[str]] = None) -> Iterator[T]:
    """Yield from ``iterable`` while drawing a :class:`ProgressBar`.

    Args:
        iterable: what to iterate over; its ``len()`` is the total when ``total`` is not given.
        total: number of items, when ``iterable`` has no length.
        desc: label of the bar.
        enabled: ``False`` silences the bar; ``None`` decides by terminal and ``NC_PRUNE_PROGRESS``.
        stream: where to draw (standard error by default).
    """
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    with ProgressBar(total, desc, enabled, stream) as bar:
        for item in iterable:
            yield item
            bar.update()
