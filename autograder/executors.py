"""Where grading jobs run: in this process, a pool of local processes, or Dask distributed workers.

The job function is `grading.grade` everywhere; results come back as data and `on_result` (the one
writer, in this process) records each as soon as it arrives, so an interrupted run keeps them all.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from .grading import Job, Result, grade, template


def failed(job: Job, exc: BaseException) -> Result:
    """The result of a job whose worker failed (it is graded again by the next run)."""
    said = " ".join(str(exc).split())[:300]  # one line, however long the worker's message
    return Result(job.assignment, job.student, failed=True, timestamp=job.timestamp,
                  reasons=[f"grading failed on its worker: {type(exc).__name__}: {said}"])


# What a Dask scheduler is sent ahead of the workers: at most this many submissions, and no more once
# their files reach SENT_BYTES (a class of 500 exercise-10 models, 14 MB each, is 7 GB).
SENT_JOBS, SENT_BYTES = 512, 1 << 30
LOOK = 0.2  # seconds between looks, while waiting on workers, at whether a signal stopped the command


def worker_start() -> None:
    """In a local worker, first: Ctrl-C is the command's to answer (it stops its workers itself), `kill`
    ends the worker at once, and so does its command's death, however it dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    if sys.platform == "linux":
        from .zygote import PR_SET_PDEATHSIG, _prctl

        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """Kill the pool's workers now (the submissions they were grading are graded by the next run; their
    folders are in the command's temporary folder, removed when it exits)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public way before 3.14
    pool.shutdown(wait=False, cancel_futures=True)  # (which forgets them)
    for process in processes:
        process.kill()
    for process in processes:  # gone before the command exits: none left for its parent's init to reap
        process.join(timeout=10)


def run(jobs: list[Job], on_result: Callable[[Job, Result], None], workers: int = 1,
        scheduler: str | None = None) -> None:
    """Grade every job, serially, on `workers` local processes, or on the Dask cluster at `scheduler`."""
    from tqdm import tqdm

    from .cli import raise_if_stopped

    bar = tqdm(total=len(jobs), unit="submission", file=sys.stderr, disable=None, leave=False)

    def done(job: Job, result: Result) -> None:
        on_result(job, result)
        bar.update()

    if jobs and not scheduler:  # before the workers fork: they share it (cli started it already)
        from .sandbox import zygote

        zygote(jobs[0].warm)
    try:
        if scheduler:
            from distributed import Client
            from distributed import as_completed as dask_completed

            with Client(scheduler, timeout="30s") as client:
                waiting, futures, sizes = list(enumerate(jobs))[::-1], {}, {}
                running = dask_completed()

                def send() -> None:  # the submissions' files go as their turn nears (SENT_BYTES at most)
                    while waiting and (not sizes or sum(sizes.values()) < SENT_BYTES) and len(sizes) < SENT_JOBS:
                        i, job = waiting.pop()
                        job = job.shipped()
                        future = client.submit(grade, job, pure=False, key=f"grade-{job.assignment}-{job.student}-{i}")
                        futures[future], sizes[future] = job, sum(map(len, job.files.values()))
                        running.add(future)

                send()
                while not running.is_empty():
                    raise_if_stopped()
                    if not running.has_ready():
                        time.sleep(LOOK)
                        continue
                    future = next(running)
                    job, _ = futures.pop(future), sizes.pop(future)
                    try:
                        result = future.result()
                    except Exception as exc:
                        result = failed(job, exc)
                    del future  # its result is released once merged
                    done(job, result)
                    send()
        elif workers > 1 and len(jobs) > 1:
            for job in jobs:  # each assignment's private-gradebook template, made once before the fork
                template(job.definition)
            context = multiprocessing.get_context("fork")
            pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context,
                                       initializer=worker_start)
            try:
                futures = {pool.submit(grade, job): job for job in jobs}  # jobs name folders: small
                while futures:
                    finished, _ = wait(futures, timeout=LOOK, return_when=FIRST_COMPLETED)
                    raise_if_stopped()
                    while finished:
                        future = finished.pop()
                        job = futures.pop(future)  # the result is released once merged
                        try:
                            result = future.result()
                        except Exception as exc:
                            result = failed(job, exc)
                        del future
                        done(job, result)
            except BaseException:  # Ctrl-C, `kill`: a worker left waiting would keep the command from exiting
                stop_workers(pool)
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        else:
            for job in jobs:
                try:
                    result = grade(job)
                except Exception as exc:  # as on a worker: reported, graded again by the next run
                    result = failed(job, exc)
                done(job, result)
                raise_if_stopped()
    finally:
        bar.close()
