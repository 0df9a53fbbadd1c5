"""The one error type users see: a single line naming the file, the place and the problem."""

from __future__ import annotations

import os
from pathlib import Path


class NatlensError(Exception):
    """Bad input or an impossible request.

    The CLI prints ``natlens: error: <message>`` and exits with code 2, without a
    traceback. The message names the file and, where known, the place in it
    (``file:line`` for text dumps, ``file@offset`` for captures).
    """

    def __init__(self, message: str, *, path: str | None = None, where: str | int | None = None):
        self.path = path
        self.where = where
        self.reason = message
        prefix = ""
        if path is not None:
            prefix = str(path)
            if where is not None:
                prefix += f"@{where}" if isinstance(where, int) else f":{where}"
            prefix += ": "
        super().__init__(prefix + message)

    def __reduce__(self):
        """Pickled whole (the file, the place, the reason), so an error raised in a worker
        process (natlens.parallel) reaches the user as it was raised."""
        return (_rebuild, (type(self), self.reason, self.path, self.where, self.__dict__))


def _rebuild(cls: type, message: str, path: str | None, where: str | int | None, state: dict) -> NatlensError:
    exc = cls(message, path=path, where=where)
    exc.__dict__.update(state)
    return exc


def require_dir(path: str | os.PathLike[str], what: str = "incident") -> Path:
    """`path` as a Path when it is a directory; else the one NatlensError every entry point
    (analyze, report, explain, batch) gives: "PATH: incident directory not found", or
    "PATH: not a directory" for a file. `what` names the directory (incident, node, incidents)."""
    p = Path(path)
    if p.is_dir():
        return p
    raise NatlensError("not a directory" if p.exists() else f"{what} directory not found", path=str(p))
