"""One job per file, in parallel processes, with a progress bar per file.

Why: an incident's captures are independent until their connections are joined, and a
machine has more than one core. Reading them one per process uses every core; each
process holds one capture's packets, so ``jobs`` also bounds the memory.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from natlens.errors import NatlensError

PARALLEL_BYTES = 64 << 20  # files together this big are worth a process each by default
# imported once, by the forkserver; natlens itself is imported by each worker, so a notebook whose
# natlens code changed does not run old code in its workers
PRELOAD = ["pandas", "pyarrow.parquet"]


def each_file(fn: Callable, args: Sequence[tuple], files: Sequence[Path], *, jobs: int | None = None,
              progress: bool | str | Path | Callable[[int], object] = False, scheduler: str | None = None,
              undo: Callable[[], None] | None = None, kept: Workers | None = None) -> list:
    """``[fn(*a, progress=callback) for a in args]``, in ``worker_count(jobs, files)`` processes
    or on the Dask cluster at ``scheduler`` (natlens.cluster; then ``jobs`` is not used)
    (files[i] is what args[i] reads; ``callback(n)`` says n more of its bytes were read), with a
    bar per file when ``progress`` (a path: written there for bars_from to draw; a callable: every
    job's bytes go to it, the one bar of jobs that read parts of one file). Results in the order given. The first error stops the work
    (the jobs not started are cancelled, those running end first) and is raised; so is Ctrl-C;
    ``undo`` then runs where the jobs ran, to remove what they left. ``kept``: run in those
    processes (``workers``), not in new ones."""
    workers = 0 if scheduler else worker_count(jobs, files)
    with _Bars(files, progress) as bars:
        if scheduler:
            from natlens.cluster import each_file_on  # noqa: PLC0415

            return each_file_on(scheduler, fn, args, files, bars.advance, undo)
        try:
            if workers == 1:
                return [fn(*a, progress=bars.advance(i)) for i, a in enumerate(args)]
            return _in_processes(fn, args, files, workers, bars, kept)
        except BaseException:
            if undo is not None:
                undo()
            raise


def worker_count(jobs: int | None, files: Sequence[Path]) -> int:
    """Processes for ``files``: ``jobs`` (at most one per file), or by default one per core this
    process may run on when they hold PARALLEL_BYTES or more (a process costs about a second to
    start: small inputs are read faster in one). NatlensError for jobs under 1."""
    if jobs is not None and jobs < 1:
        raise NatlensError(f"--jobs must be 1 or more, not {jobs}")
    if jobs is None:
        big = sum(f.stat().st_size for f in files) >= PARALLEL_BYTES
        jobs = cores() if big else 1
    return max(1, min(jobs, len(files)))


def cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Workers:
    """Worker processes kept for the each_file calls of a ``with`` block (started at the first
    that needs them, ended with the block): work done in steps, such as a big capture's spans and
    then its parts, starts processes once (about half a second each time)."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._starter: threading.Thread | None = None

    def pool(self, workers: int) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = _new_pool(workers)
        return self._pool

    def start(self, workers: int) -> None:
        """Start ``workers`` processes now, not at the first job: each gets ready (loads what its
        jobs need) while this process does the work that must come before them (a big capture's
        cuts), not after it. Returns at once: a process starts when the forkserver has loaded
        what it preloads, and waiting for that here would keep this process from its own work."""
        if workers > 1:
            self._starter = threading.Thread(target=_start, args=(self.pool(workers), workers),
                                             name="natlens-workers-start", daemon=True)
            self._starter.start()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        if self._starter is not None:
            self._starter.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _start(pool: ProcessPoolExecutor, workers: int) -> None:
    """Have ``pool`` start ``workers`` processes (it starts one per job submitted, up to its size).
    A pool that cannot start one is left as it is: the first real job reports why."""
    with contextlib.suppress(BrokenProcessPool, RuntimeError):
        for _ in range(workers):
            pool.submit(os.getpid)


def _new_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes from the forkserver, each taking Arrow's buffers from malloc."""
    return ProcessPoolExecutor(workers, mp_context=_context(), initializer=system_memory)


def system_memory() -> None:
    """Arrow's buffers in this worker process from the C library's malloc, not Arrow's default
    mimalloc. Why: a worker's jobs allocate and free big buffers again and again, and mimalloc gives
    freed memory back to the system within milliseconds, so the next buffer touches new memory (a
    page fault per page; on a virtual machine that hands freed memory back to its host, far more).
    tcp-5M analyze took ~8% less CPU over all its processes and ~6% less time (medians of nine
    alternated runs). The main process keeps Arrow's default, and what it holds at its peak is not
    changed."""
    import pyarrow as pa  # noqa: PLC0415 - the command line loads this module before pyarrow

    pa.set_memory_pool(pa.system_memory_pool())


def _context():
    ctx = multiprocessing.get_context("forkserver")  # never fork a process with threads running
    ctx.set_forkserver_preload(PRELOAD)  # no effect once start_early started it
    return ctx


def start_early(files: Sequence[Path], jobs: int | None, modules: Sequence[str]) -> bool:
    """Start the forkserver now, with ``modules`` loaded in it too, when reading ``files`` may use
    worker processes (``jobs`` not 1, PARALLEL_BYTES or more, more than one core): it loads them
    on another core while this process loads the rest, and each worker then starts at once instead
    of loading natlens itself (about a second). For a command line's own process only: its natlens
    code cannot change under it (a notebook's could, and its workers load natlens afresh). Whether
    it started."""
    if jobs == 1 or cores() < 2 or sum(f.stat().st_size for f in files if f.is_file()) < PARALLEL_BYTES:
        return False
    from multiprocessing import forkserver  # noqa: PLC0415

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([*PRELOAD, *modules])
    forkserver.ensure_running()
    return True


def _in_processes(fn: Callable, args: Sequence[tuple], files: Sequence[Path], workers: int, bars: _Bars,
                  kept: Workers | None = None) -> list:
    """The jobs in a pool of ``workers`` processes (``kept``'s, or new ones); with bars, they
    report the bytes they read on a queue, which drives them."""
    with contextlib.ExitStack() as stack:
        queue = stack.enter_context(_context().Manager()).Queue() if bars.bars else None
        pool = kept.pool(workers) if kept else stack.enter_context(_new_pool(workers))
        futures = [pool.submit(_reporting, fn, a, i, queue) for i, a in enumerate(args)]
        try:
            _wait_all(futures, bars, queue)
        except BrokenProcessPool:
            unfinished = [str(f) for f, fu in zip(files, futures, strict=True) if not fu.done() or fu.exception()]
            raise NatlensError("a worker process died (out of memory? try --jobs 1) while reading "
                               + ", ".join(unfinished)) from None
        except BaseException:
            # the first error (or Ctrl-C) cancels the jobs not started and waits for those running:
            # what they write is then there for the caller to remove (a later shutdown would not wait)
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        return [f.result() for f in futures]


def _wait_all(futures: list, bars: _Bars, queue) -> None:
    """Wait for every job, advancing the bars; raise the error of the first job that fails."""
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
        bars.drain(queue)
        failed = [f for f in futures if f in done and f.exception() is not None]
        if failed:
            raise failed[0].exception()
    bars.drain(queue)


def _reporting(fn: Callable, args: tuple, i: int, queue):
    """fn in a worker process, putting (file number, bytes read) on ``queue`` (None: no bars)."""
    return fn(*args, progress=None if queue is None else (lambda n: queue.put((i, n))))


class _Bars:
    """One progress bar per file, over its bytes: drawn on stderr (``show`` True), or written as
    events to the file ``show`` names for another process to draw (bars_from); none when False."""

    def __init__(self, files: Sequence[Path], show: bool | str | Path) -> None:
        self.bars: list = []
        self._events = None
        if show is False or show is None or show == "":
            return
        if callable(show):
            self.bars = [_Event(None, 0, show)] * len(files)
            return
        specs = [(f"{f.parent.name}/{f.name}", f.stat().st_size) for f in files]
        if show is True:
            self.bars = _drawn(specs)
            return
        self._events = open(show, "a", encoding="utf-8")  # noqa: SIM115 (closed in __exit__)
        self._events.write(json.dumps({"bars": specs}) + "\n")
        self._events.flush()
        self.bars = [_Event(self._events, i) for i in range(len(specs))]

    def advance(self, i: int) -> Callable[[int], object] | None:
        """The callback that advances file i's bar (None: no bars)."""
        return self.bars[i].update if self.bars else None

    def drain(self, queue) -> None:
        """Advance the bars by what the workers reported (queue None: no bars)."""
        while queue is not None and not queue.empty():
            i, n = queue.get()
            if self.bars:
                self.bars[i].update(n)

    def __enter__(self) -> _Bars:
        return self

    def __exit__(self, *exc) -> None:
        for bar in self.bars:
            bar.close()
        if self._events is not None:
            self._events.close()


def _drawn(specs: Sequence[tuple[str, int]]) -> list:
    """A tqdm bar on stderr per (name, bytes)."""
    from tqdm import tqdm  # noqa: PLC0415

    return [tqdm(total=total, unit="B", unit_scale=True, desc=name, position=i, leave=False, file=sys.stderr)
            for i, (name, total) in enumerate(specs)]


class _Event:
    """A bar that writes ``i n`` lines (n more bytes of file i) for bars_from to draw, or that
    calls ``to(n)``: a bar drawn elsewhere."""

    def __init__(self, out, i: int, to: Callable[[int], object] | None = None) -> None:
        self.out, self.i, self.to = out, i, to

    def update(self, n: int) -> None:
        if self.to is not None:
            self.to(n)
            return
        self.out.write(f"{self.i} {n}\n")
        self.out.flush()

    def close(self) -> None:
        pass


@contextlib.contextmanager
def bars_from(path: Path) -> Iterator[None]:
    """While the block runs, draw on stderr the bars another process writes to ``path``
    (``progress=path`` in analyze: a notebook kernel's stderr would land in the report)."""
    stop = threading.Event()
    state: dict = {"bars": [], "offset": 0}
    follower = threading.Thread(target=_follow, args=(path, state, stop), daemon=True)
    follower.start()
    try:
        yield
    finally:
        stop.set()
        follower.join()
        for bar in state["bars"]:
            bar.close()


def _follow(path: Path, state: dict, stop: threading.Event) -> None:
    """Apply the events of ``path`` to the bars until ``stop``, then once more."""
    while True:
        last = stop.is_set()
        with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as f:
            f.seek(state["offset"])
            for line in iter(f.readline, ""):
                if not line.endswith("\n"):
                    break  # written in part: read again next time
                state["offset"] = f.tell()
                _apply(line, state)
        if last:
            return
        stop.wait(0.2)


def _apply(line: str, state: dict) -> None:
    """One event: a new set of bars (a JSON header), or bytes read of one file."""
    if line.startswith("{"):
        for bar in state["bars"]:
            bar.close()
        state["bars"] = _drawn(json.loads(line)["bars"])
        return
    i, n = map(int, line.split())
    state["bars"][i].update(n)
