"""Progress bars for long work (demo training, one-shot pruning over blocks), drawn by ``tqdm``.

This module is the one place nc_prune builds a bar; ``tqdm`` draws it. It draws on standard error only when
that is a terminal, so logs, pipes and CI output stay clean. It is also silent when ``enabled=False`` is
passed or the environment sets ``NC_PRUNE_PROGRESS=0``; with ``NC_PRUNE_PROGRESS=1`` it draws even when
standard error is not a terminal. A silent bar creates no ``tqdm`` object at all.

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
from typing import IO, Any, Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")

ENV_VAR = "NC_PRUNE_PROGRESS"
ASCII = "-#"  # tqdm's charset: '-' for what is left, '#' for what is done


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


def _bar_format(desc: str, total: Optional[int], width: int) -> str:
    head = "{desc} " if desc else ""
    if total:
        return head + "|{bar:%d}| {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]" % width
    return head + "{n_fmt} [{elapsed}, {rate_fmt}{postfix}]"


class ProgressBar:
    """A one-line ``tqdm`` bar: ``desc |#####-----| 12/40 [00:03, 3.90it/s, postfix]``.

    Args:
        total: how many updates make 100 %; ``None`` shows a counter without a bar.
        desc: a label in front of the bar.
        enabled: ``False`` silences the bar; ``None`` decides by :func:`progress_enabled`.
        stream: where to draw (standard error by default).
        width: characters of the bar itself.
        min_interval: seconds between redraws (closing always draws the final state).

    Use it as a context manager, or call :meth:`close` when done.
    """

    def __init__(self, total: Optional[int] = None, desc: str = "", enabled: Optional[bool] = None,
                 stream: Optional[IO[str]] = None, width: int = 24, min_interval: float = 0.1) -> None:
        self.total = total
        self.desc = desc
        self.stream = sys.stderr if stream is None else stream
        self.enabled = progress_enabled(enabled, self.stream)
        self.width = width
        self.n = 0
        self.postfix = ""
        self._start = time.monotonic()
        self._bar: Any = None
        if self.enabled:
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=desc, file=self.stream, mininterval=min_interval, ascii=ASCII,
                             bar_format=_bar_format(desc, total, width), leave=True, dynamic_ncols=False)

    def update(self, n: int = 1, postfix: Optional[str] = None) -> None:
        """Advance by ``n`` and redraw (at most every ``min_interval`` seconds)."""
        self.n += n
        if postfix is not None:
            self.set_postfix(postfix)
        if self._bar is not None:
            self._bar.update(n)

    def set_postfix(self, text: str) -> None:
        """Text shown after the counters (for example the current loss)."""
        self.postfix = text
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def render(self, now: Optional[float] = None) -> str:
        """The line the bar draws (without the carriage return), as ``tqdm`` formats it."""
        from tqdm import tqdm
        elapsed = (time.monotonic() if now is None else now) - self._start
        return tqdm.format_meter(self.n, self.total, elapsed, prefix=self.desc, ascii=ASCII,
                                 bar_format=_bar_format(self.desc, self.total, self.width), postfix=self.postfix)

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

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
