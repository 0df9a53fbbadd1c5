"""Run a parameterized notebook with papermill and decide, strictly, whether it worked.

A notebook counts as done only if papermill raised nothing, every code cell ran
to completion, no cell holds an error output, and every file the notebook must
write (e.g. summary.json) was written during this run. A cell that timed out or
a kernel that died is a failure even when the saved notebook looks complete
(its last outputs may be there, the rest of the run is not). A cell that raised
NatlensError is bad input, not a broken notebook: `input_error` says so and `error`
is the exception's own one-line message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

KERNEL_NAME = "python3"
INPUT_ERROR = "NatlensError"  # the exception a cell raises for bad input (natlens.errors)


@dataclass
class Execution:
    """What happened to one notebook run."""

    notebook: Path           # the executed notebook (written even on failure, when possible)
    ok: bool
    error: str | None        # one line saying why it failed, None when ok
    seconds: float
    input_error: bool = False  # a cell raised NatlensError: bad input, and `error` is its message


def execute(
    source: str | Path,
    output: str | Path,
    parameters: Mapping[str, Any],
    *,
    cwd: str | Path | None = None,
    cell_timeout: float = 600.0,
    start_timeout: float = 120.0,
    kernel_name: str = KERNEL_NAME,
    log: str | Path | None = None,
    expect: Iterable[str | Path] = (),
) -> Execution:
    """Execute `source` into `output` with `parameters`; never raises for notebook failures.

    `log` receives the cells' stdout/stderr as they run (papermill's log output).
    `expect` names files the notebook must (re)write during the run.
    """
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    output = Path(output)
    expect = [Path(p) for p in expect]
    handler = _attach_log(log)
    t0 = time.time()
    error: str | None = None
    try:
        papermill.execute_notebook(
            str(source), str(output), parameters=dict(parameters),
            kernel_name=kernel_name, cwd=str(cwd) if cwd else None,
            execution_timeout=cell_timeout, start_timeout=start_timeout,
            progress_bar=False, log_output=log is not None, report_mode=False,
            kernel_manager_class=_kernel_manager(log),
        )
    except PapermillExecutionError as exc:
        if exc.ename == INPUT_ERROR:  # the library said the input is wrong: its own words
            return Execution(notebook=output, ok=False, error=_first_line(exc.evalue),
                             seconds=time.time() - t0, input_error=True)
        error = f"cell {exc.exec_count or exc.cell_index} raised {exc.ename}: {_first_line(exc.evalue)}"
    except CellTimeoutError:
        error = f"a cell ran longer than the {cell_timeout:g} s cell timeout"
    except DeadKernelError as exc:
        error = f"the kernel died ({_first_line(str(exc))})"
    except Exception as exc:  # kernel failed to start, notebook unreadable, ...
        error = f"{type(exc).__name__}: {_first_line(str(exc))}"
    finally:
        if handler is not None:
            logging.getLogger("papermill").removeHandler(handler)
            handler.close()
    seconds = time.time() - t0
    if error is None:
        error = check_completed(output)
    if error is None:
        for p in expect:
            if not p.is_file() or p.stat().st_mtime < t0 - 1:
                error = f"the notebook did not write {p.name}"
                break
    return Execution(notebook=output, ok=error is None, error=error, seconds=seconds)


def check_completed(path: str | Path) -> str | None:
    """Why the executed notebook at `path` is not a complete run, or None if it is."""
    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception as exc:
        return f"executed notebook unreadable: {_first_line(str(exc))}"
    pm = nb.metadata.get("papermill", {})
    if pm.get("exception"):
        return "papermill recorded an exception"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        status = cell.get("metadata", {}).get("papermill", {}).get("status")
        if status != "completed":
            return f"cell {i} did not complete (status {status or 'missing'})"
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return f"cell {i} raised {out.get('ename')}: {_first_line(out.get('evalue', ''))}"
    return None


def _attach_log(log: str | Path | None) -> logging.Handler | None:
    if log is None:
        return None
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(str(log), mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger = logging.getLogger("papermill")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return handler


def _kernel_manager(log: str | Path | None) -> type:
    """A kernel manager that sends the kernel process's own stdout/stderr to `log`.

    Without it the kernel's warnings go to the terminal (and through a batch's
    progress bar); cell outputs are logged separately by papermill.
    """
    from jupyter_client.manager import AsyncKernelManager

    if log is None:
        return AsyncKernelManager

    class LoggingKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            with open(log, "ab") as sink:  # the kernel keeps its own copy of the descriptor
                kw["stdout"] = kw["stderr"] = sink
                await super()._async_launch_kernel(kernel_cmd, **kw)

    return LoggingKernelManager


def _first_line(s: str) -> str:
    s = (s or "").strip()
    return s.splitlines()[0][:300] if s else ""
