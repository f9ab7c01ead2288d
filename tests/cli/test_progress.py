"""The progress bar (drawn by tqdm) draws on terminals only, and exactly what it says."""

from __future__ import annotations

import io

import pytest
from tqdm import tqdm

from nc_prune.progress import ProgressBar, progress, progress_enabled


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("NC_PRUNE_PROGRESS", raising=False)


def test_silent_when_not_a_terminal():
    out = io.StringIO()
    assert list(progress(range(7), desc="x", stream=out)) == list(range(7))
    assert out.getvalue() == ""
    bar = ProgressBar(3, stream=out)
    assert not bar.enabled and bar._bar is None  # a silent bar builds no tqdm at all


def test_draws_on_a_terminal_and_ends_the_line():
    out = FakeTTY()
    with ProgressBar(4, "train", stream=out, width=8, min_interval=0.0) as bar:
        assert isinstance(bar._bar, tqdm)
        for _ in range(4):
            bar.update()
    text = out.getvalue()
    lines = text.split("\r")[1:]
    assert len(lines) == 6  # the empty bar, 4 updates, the final draw on close
    assert lines[0].startswith("train |--------| 0/4 [00:00, ?it/s]")
    assert lines[1].startswith("train |##------| 1/4 [00:00, ")
    assert lines[-1].startswith("train |########| 4/4 [00:00, ")
    assert text.endswith("\n") and text.count("\n") == 1


@pytest.mark.parametrize("env,enabled,tty,expected", [
    (None, None, True, True), (None, None, False, False), ("0", None, True, False), ("1", None, False, True),
    ("1", False, True, False), ("off", None, True, False), (None, True, False, False),
])
def test_enabled_rules(monkeypatch, env, enabled, tty, expected):
    """--no-progress (enabled=False) always wins; NC_PRUNE_PROGRESS=0/1 beats the terminal check."""
    if env is not None:
        monkeypatch.setenv("NC_PRUNE_PROGRESS", env)
    stream = FakeTTY() if tty else io.StringIO()
    assert progress_enabled(enabled, stream) is expected


def test_env_zero_silences_a_terminal(monkeypatch):
    monkeypatch.setenv("NC_PRUNE_PROGRESS", "0")
    out = FakeTTY()
    assert sum(progress(range(5), stream=out)) == 10
    assert out.getvalue() == ""


def test_render_without_total_and_with_postfix():
    bar = ProgressBar(None, "calib", enabled=False)
    bar.update(3, postfix="loss 0.25")
    line = bar.render(now=bar._start + 2.0)
    assert line == "calib 3 [00:02,  1.50it/s, loss 0.25]"
    full = ProgressBar(8, "prune", enabled=False, width=4)
    full.update(2)
    assert full.render(now=full._start + 1.0) == "prune |#---| 2/8 [00:01,  2.00it/s]"


def test_redraw_is_throttled_but_the_last_update_draws():
    out = FakeTTY()
    bar = ProgressBar(100, stream=out, min_interval=3600)
    for _ in range(100):
        bar.update()
    bar.close()
    draws = out.getvalue().split("\r")[1:]
    assert len(draws) == 2  # the empty bar, then the final state on close
    assert "0/100" in draws[0] and "100/100" in draws[-1]


def test_shorter_line_overwrites_a_longer_one():
    out = FakeTTY()
    bar = ProgressBar(None, stream=out, min_interval=0.0)
    bar.update(postfix="a long postfix")
    bar.update(postfix="")
    _, first, second = out.getvalue().split("\r")[1:]
    assert first.rstrip().endswith(", a long postfix]") and second.rstrip().endswith("it/s]")
    assert len(second) == len(first)
