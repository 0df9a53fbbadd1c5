"""--scheduler / --workers: read the captures on a Dask cluster (natlens.cluster)."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator


def add_cluster(p: argparse.ArgumentParser) -> None:
    """--scheduler and --workers, shared by `analyze`, `report` and `batch`."""
    g = p.add_argument_group("Dask cluster", "read each capture on a Dask distributed worker (the bundle on "
                             "storage every worker sees at the same path); needs dask and distributed")
    g.add_argument("--scheduler", metavar="ADDRESS",
                   help="the scheduler of a running cluster, e.g. tcp://HOST:8786 (default: no cluster)")
    g.add_argument("--workers", type=int, metavar="N",
                   help="start a cluster of N worker processes on this machine for this run")


@contextlib.contextmanager
def scheduler_of(args: argparse.Namespace) -> Iterator[str | None]:
    """The scheduler address the run uses (None: no cluster), a local cluster started for
    --workers and stopped after; NatlensError for both options."""
    from natlens.cluster import forget, local_cluster  # noqa: PLC0415
    from natlens.errors import NatlensError  # noqa: PLC0415

    if args.scheduler and args.workers is not None:
        raise NatlensError("give --scheduler (a running cluster) or --workers (a cluster started here), not both")
    if args.workers is not None:
        with local_cluster(args.workers) as scheduler:
            yield scheduler
    elif args.scheduler:
        try:
            yield args.scheduler
        finally:
            forget(args.scheduler)
    else:
        yield None
