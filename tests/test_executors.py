"""How `autograder.executors.run` stops: a signal is never lost, and no worker outlives the run.

No notebook is graded here: the job function is replaced by one that only waits, so that what is
tested is the loop that hands out the jobs, serially and on two local worker processes.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from autograder import cli, executors, sandbox

SECONDS = 0.5  # one fake job's time: long beside executors.LOOK, short for a test


def fake_grade(job: SimpleNamespace) -> int:
    """Note this process's pid in the job's file, wait, return the pid (the job's result)."""
    with open(job.pids, "a") as pids:
        pids.write(f"{os.getpid()}\n")
    time.sleep(SECONDS)
    return os.getpid()


class DroppedStop:
    """An object whose finalizer receives Ctrl-C: Python prints the KeyboardInterrupt raised there as
    'Exception ignored' and goes on, as it does when the signal comes while a weakref callback runs."""

    def __del__(self) -> None:
        signal.raise_signal(signal.SIGINT)


@pytest.fixture
def stop_handler():
    """The command's handler of Ctrl-C, as `python -m autograder` installs it; the one before put back."""
    before = signal.signal(signal.SIGINT, cli.stop)
    cli.STOPPED.clear()
    yield
    signal.signal(signal.SIGINT, before)
    cli.STOPPED.clear()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("workers", [1, 2])
def test_a_stop_that_python_drops_still_stops_the_run(workers, stop_handler, monkeypatch, tmp_path):
    """Ctrl-C comes while a finalizer runs, which swallows its KeyboardInterrupt: does the run still stop at
    its next look, raising it (instead of grading the class to the end), with every worker process gone?"""
    monkeypatch.setattr(sandbox, "zygote", lambda warm: None)  # no kernel is started: no zygote
    monkeypatch.setattr(executors, "template", lambda definition: None)
    monkeypatch.setattr(executors, "grade", fake_grade)
    pids = tmp_path / "pids"
    jobs = [SimpleNamespace(student=f"s{i}", warm=(), definition=None, pids=str(pids)) for i in range(8)]
    results = []

    def on_result(job, result):
        results.append(result)
        if len(results) == 1:
            DroppedStop()  # made and dropped at once: its finalizer gets the signal

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        executors.run(jobs, on_result, workers=workers)
    assert len(results) < len(jobs) and time.monotonic() - started < 4 * SECONDS, (
        f"{len(results)} of {len(jobs)} jobs graded in {time.monotonic() - started:.1f} s after Ctrl-C")
    workers_seen = {int(p) for p in Path(pids).read_text().split()} - {os.getpid()}
    assert len(workers_seen) == (0 if workers == 1 else 2)
    for pid in workers_seen:  # killed and waited for: not even a zombie is left
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_stop_while_a_result_is_recorded_waits_for_it(stop_handler):
    """Ctrl-C while a result is recorded (SQLAlchemy at work, which logged a stop raised inside it with its
    traceback): is the record finished first, and the stop raised as soon as it is?"""
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with cli.stops_deferred():
            signal.raise_signal(signal.SIGINT)
            finished.append("after the signal")  # not interrupted
    assert finished == ["after the signal"] and cli.DEFERRED == []
    cli.STOPPED.clear()
    with pytest.raises(KeyboardInterrupt):  # and outside such a block, at once
        signal.raise_signal(signal.SIGINT)
        finished.append("never")
    assert finished == ["after the signal"]
