"""One job per file, in parallel processes, with a progress bar per file.

Why: an incident's captures are independent until their connections are joined, and a
machine has more than one core. Reading them one per process uses every core; each
process holds one capture's packets, so ``jobs`` also bounds the memory.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from natlens.errors import NatlensError

PARALLEL_BYTES = 64 << 20  # files together this big are worth a process each by default
PRELOAD = ["natlens.capture", "natlens.connections", "pandas", "pyarrow.parquet"]  # imported once, by the forkserver


def each_file(fn: Callable, args: Sequence[tuple], files: Sequence[Path], *, jobs: int | None = None,
              progress: bool = False) -> list:
    """``[fn(*a, progress=callback) for a in args]``, in ``worker_count(jobs, files)`` processes
    (files[i] is what args[i] reads; ``callback(n)`` says n more of its bytes were read), with a
    bar per file when ``progress``. Results in the order given; an error of any job is raised."""
    with _Bars(files, progress) as bars:
        workers = worker_count(jobs, files)
        if workers == 1:
            return [fn(*a, progress=bars.advance(i)) for i, a in enumerate(args)]
        return _in_processes(fn, args, workers, bars)


def worker_count(jobs: int | None, files: Sequence[Path]) -> int:
    """Processes for ``files``: ``jobs`` (at most one per file), or by default one per core when
    they hold PARALLEL_BYTES or more (a process costs about a second to start: small inputs
    are read faster in one). NatlensError for jobs under 1."""
    if jobs is not None and jobs < 1:
        raise NatlensError(f"--jobs must be 1 or more, not {jobs}")
    if jobs is None:
        big = sum(f.stat().st_size for f in files) >= PARALLEL_BYTES
        jobs = (os.cpu_count() or 1) if big else 1
    return max(1, min(jobs, len(files)))


def _in_processes(fn: Callable, args: Sequence[tuple], workers: int, bars: _Bars) -> list:
    """The jobs in a pool of ``workers`` processes; they report the bytes they read on a queue,
    which drives the bars."""
    ctx = multiprocessing.get_context("forkserver")  # never fork a process with threads running
    ctx.set_forkserver_preload(PRELOAD)  # not the user's __main__: a script's top level must not run again
    with ctx.Manager() as manager, ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        queue = manager.Queue()
        futures = [pool.submit(_reporting, fn, a, i, queue) for i, a in enumerate(args)]
        pending = set(futures)
        while pending:
            _done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            bars.drain(queue)
        bars.drain(queue)
        return [f.result() for f in futures]


def _reporting(fn: Callable, args: tuple, i: int, queue):
    """fn in a worker process, putting (file number, bytes read) on ``queue``."""
    return fn(*args, progress=lambda n: queue.put((i, n)))


class _Bars:
    """One progress bar per file, over its bytes (none when not asked for)."""

    def __init__(self, files: Sequence[Path], show: bool) -> None:
        self.bars: list = []
        if show:
            from tqdm import tqdm  # noqa: PLC0415

            self.bars = [tqdm(total=f.stat().st_size, unit="B", unit_scale=True, desc=f"{f.parent.name}/{f.name}",
                              position=i, leave=False, file=sys.stderr) for i, f in enumerate(files)]

    def advance(self, i: int) -> Callable[[int], object] | None:
        """The callback that advances file i's bar (None: no bars)."""
        return self.bars[i].update if self.bars else None

    def drain(self, queue) -> None:
        """Advance the bars by what the workers reported."""
        while not queue.empty():
            i, n = queue.get()
            if self.bars:
                self.bars[i].update(n)

    def __enter__(self) -> _Bars:
        return self

    def __exit__(self, *exc) -> None:
        for bar in self.bars:
            bar.close()
