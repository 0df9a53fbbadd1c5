"""Jobs on a Dask distributed cluster, for incidents past one machine.

Why: an incident's captures are independent until their connections are joined, and the
connection tables are about a hundred times smaller than the packets. On a cluster each
capture is read by a worker (the bundle on storage every worker sees at the same path),
only its connection table comes back, and the packets a report shows stay in a file on
that worker's disk (findings.captures.HopPackets), read back through the worker.

    with local_cluster(2) as scheduler:        # --workers 2
        analyze(bundle, scheduler=scheduler)   # or scheduler="tcp://HOST:8786"

Dask and distributed are optional: only these calls import them, and say how to install them.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from natlens.errors import NatlensError

CONNECT_TIMEOUT_S = 10  # a scheduler that does not answer in this time is not there
WORKERLESS_S = 30  # a cluster without a worker this long is not going to read the captures
PROGRESS_EVERY_S = 0.2  # a worker reports the bytes it read at most this often (one message each)
_MISSING = "--scheduler and --workers need Dask: pip install dask distributed"


def _distributed():
    """The distributed module, or NatlensError saying how to install it."""
    try:
        import distributed  # noqa: PLC0415
    except ImportError:
        raise NatlensError(_MISSING) from None
    return distributed


@contextlib.contextmanager
def local_cluster(workers: int) -> Iterator[str]:
    """A Dask cluster of ``workers`` processes on this machine (one thread each) while the block
    runs; yields its scheduler's address. NatlensError for fewer than one worker."""
    if workers < 1:
        raise NatlensError(f"--workers must be 1 or more, not {workers}")
    distributed = _distributed()
    import dask  # noqa: PLC0415 (installed with distributed)

    with dask.config.set({NANNY_ENVIRON: worker_environ()}), \
            distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                     dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR) as c:
        try:
            yield c.scheduler_address
        finally:
            forget(c.scheduler_address)


NANNY_ENVIRON = "distributed.nanny.pre-spawn-environ"


def worker_environ() -> dict:
    """The environment Dask's nanny gives a worker, without its MALLOC_TRIM_THRESHOLD_ (65,536):
    malloc then returns every freed block to the system and takes it back at a page fault each,
    a fifth of the time of reading a 5M-packet capture on the 2-core test machine; natlens gives
    memory back itself after each capture (natlens._memory)."""
    import dask  # noqa: PLC0415

    return {k: v for k, v in dask.config.get(NANNY_ENVIRON, {}).items() if k != "MALLOC_TRIM_THRESHOLD_"}


_CLIENTS: dict[str, object] = {}
_UNDO: dict[str, list[Callable[[], None]]] = {}  # per scheduler: what removes the files this process's jobs left
_LATER: dict[str, list[tuple[str, Callable, tuple]]] = {}  # per scheduler: (worker, fn, args) of later_on_worker


def client(scheduler: str):
    """A client of the scheduler at ``scheduler`` (one per address, kept until ``forget``: hop
    packets are read through it after the analysis). NatlensError when none answers there."""
    if scheduler not in _CLIENTS:
        distributed = _distributed()
        try:
            _CLIENTS[scheduler] = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise NatlensError(f"--scheduler {scheduler}: no Dask scheduler answers there ({exc})") from None
    return _CLIENTS[scheduler]


def forget(scheduler: str) -> None:
    """Remove from every worker of ``scheduler`` the files this process's jobs left there, and
    close this process's client of it: a long-running cluster keeps nothing of this run."""
    c = _CLIENTS.pop(scheduler, None)
    undo = _UNDO.pop(scheduler, [])
    _LATER.pop(scheduler, None)
    if c is None:
        return
    with contextlib.suppress(OSError, TimeoutError):
        for fn in undo:
            c.run(fn)
    c.close()


def this_worker() -> str | None:
    """The address of the Dask worker running this code (None: not on a Dask worker)."""
    if "distributed" not in sys.modules:  # a worker has it loaded; importing it costs ~0.4 s
        return None
    try:
        from distributed import get_worker  # noqa: PLC0415

        return get_worker().address
    except (ImportError, ValueError):
        return None


def each_file_on(scheduler: str, fn: Callable, args: Sequence[tuple], files: Sequence[Path],
                 advance: Callable[[int], Callable | None], undo: Callable[[], None] | None = None) -> list:
    """``[fn(*a, progress=...) for a in args]`` on the cluster's workers, results in order.
    ``advance(i)`` is the callback of file i's bar (None: no bars): workers report the bytes they
    read on a Dask queue. The first error is raised, the jobs not started are cancelled, and
    ``undo`` runs on every worker (and on those still running, when they end) to remove what
    the jobs left there; a worker that died is a one-line NatlensError."""
    c, distributed = client(scheduler), _distributed()
    _some_workers(c, scheduler)
    _run_later(c, scheduler)
    if undo is not None:
        _UNDO.setdefault(scheduler, []).append(undo)
    run = uuid.uuid4().hex
    queue = None if advance(0) is None else distributed.Queue(f"natlens-progress-{run}", client=c)
    failed = distributed.Event(f"natlens-failed-{run}", client=c)
    where = placement(c, files)
    futures = [c.submit(_on_worker, fn, a, str(f), i, None if queue is None else queue.name, failed.name, undo,
                        pure=False, **({} if w is None else {"workers": w, "allow_other_workers": False}))
               for i, (a, f, w) in enumerate(zip(args, files, where, strict=True))]
    try:
        try:
            _wait_all(futures, queue, advance, c, scheduler)
        except distributed.KilledWorker:
            raise NatlensError("a Dask worker died (out of memory?) while reading " + ", ".join(
                str(f) for f, fu in zip(files, futures, strict=True) if fu.status != "finished")) from None
    except BaseException:
        failed.set()  # a job still running undoes its own work when it ends
        c.cancel(futures)
        if undo is not None:
            c.run(undo)
        raise
    return c.gather(futures)


def placement(c, files: Sequence[Path]) -> list[list[str] | None]:
    """The workers that can read each file (None: every worker can): a capture is read where it
    is, on shared storage or on the disk of a worker that holds its node's directory.
    NatlensError naming a file that no worker sees."""
    seen = c.run(_visible, [str(f) for f in files])  # {worker: [True where it sees file i]}
    out: list[list[str] | None] = []
    for i, f in enumerate(files):
        who = sorted(w for w, sees in seen.items() if sees[i])
        if not who:
            raise NatlensError(f"{f}: not found on any of the {len(seen)} Dask worker(s): put the bundle on "
                               "storage every worker sees at the same path, or run a worker where each node "
                               "directory is, at that path")
        out.append(None if len(who) == len(seen) else who)
    return out


def _visible(files: list[str]) -> list[bool]:
    """On a worker: which of the files it sees."""
    return [Path(f).is_file() for f in files]


def _some_workers(c, scheduler: str) -> None:
    """NatlensError when the cluster has no worker, nor one within WORKERLESS_S (the jobs would wait forever)."""
    try:
        c.wait_for_workers(1, timeout=WORKERLESS_S)
    except TimeoutError:
        raise NatlensError(f"--scheduler {scheduler}: the Dask cluster has no worker (start one: "
                           f"dask worker {scheduler})") from None


def _wait_all(futures: list, queue, advance: Callable[[int], Callable | None], c, scheduler: str) -> None:
    """Wait for every job, advancing the bars; raise the error of the first job that failed, or
    NatlensError when the cluster lost every worker for WORKERLESS_S."""
    checked = time.monotonic()
    while True:
        if time.monotonic() - checked > WORKERLESS_S:
            _some_workers(c, scheduler)
            checked = time.monotonic()
        for f in futures:
            if f.status in ("error", "lost", "cancelled"):
                f.result()  # raises the job's own error
        done = all(f.status == "finished" for f in futures)
        _drain(queue, advance)  # after the check: a finished job's last report is on the queue
        if done:
            return
        time.sleep(PROGRESS_EVERY_S)


def _drain(queue, advance: Callable[[int], Callable | None]) -> None:
    """Advance the bars by what the workers reported."""
    while queue is not None and queue.qsize():
        for i, n in queue.get(batch=True):
            advance(i)(n)


def _on_worker(fn: Callable, args: tuple, file: str, i: int, queue: str | None, failed: str,
               undo: Callable[[], None] | None):
    """fn on a worker, its bytes read put on the queue named ``queue`` (None: no bars); ``undo``
    when the run failed meanwhile. NatlensError when the worker does not see the file (the
    bundle is not on shared storage)."""
    distributed = _distributed()
    if not Path(file).exists():
        raise NatlensError(f"{file}: not found on Dask worker {this_worker()}: the bundle must be on "
                           "storage every worker sees at the same path")
    report = None if queue is None else _Reporter(distributed.Queue(queue), i)
    try:
        return fn(*args, progress=report)
    finally:
        if report is not None:
            report.flush()
        if undo is not None and distributed.Event(failed).is_set():
            undo()


class _Reporter:
    """Bytes read, put on a Dask queue at most every PROGRESS_EVERY_S (a message costs a round trip)."""

    def __init__(self, queue, i: int) -> None:
        self.queue, self.i, self.pending, self.last = queue, i, 0, time.monotonic()

    def __call__(self, n: int) -> None:
        self.pending += n
        if time.monotonic() - self.last >= PROGRESS_EVERY_S:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.queue.put((self.i, self.pending))
        self.pending, self.last = 0, time.monotonic()


def on_worker(scheduler: str, worker: str, fn: Callable, *args):
    """``fn(*args)`` on the worker at ``worker`` (where a file it wrote is) and its result.
    NatlensError when that worker has gone (its files went with it)."""
    c = client(scheduler)
    _run_later(c, scheduler)
    if worker not in c.nthreads():  # asks the scheduler now
        raise NatlensError(f"Dask worker {worker} has gone, and the packets it kept with it")
    return c.submit(fn, *args, workers=[worker], allow_other_workers=False, pure=False).result()


def later_on_worker(scheduler: str, worker: str, fn: Callable, *args) -> None:
    """``fn(*args)`` on that worker at this process's next call into the cluster (dropped when it
    lets go: forget's undo removes everything). For finalizers: they may run on the client's own
    event-loop thread, where a call to the cluster would wait for itself."""
    if scheduler in _CLIENTS:
        _LATER.setdefault(scheduler, []).append((worker, fn, args))


def _run_later(c, scheduler: str) -> None:
    """What later_on_worker left for ``scheduler``, on the workers still there."""
    todo = _LATER.pop(scheduler, [])
    if todo:
        live = c.nthreads()
        futures = [c.submit(fn, *args, workers=[w], allow_other_workers=False, pure=False)
                   for w, fn, args in todo if w in live]
        c.gather(futures, errors="skip")


