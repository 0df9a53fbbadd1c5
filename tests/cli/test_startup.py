"""What a command loads: `natlens analyze` without --anonymize must not import the report's
notebook machinery (nbformat's jsonschema took 3.6 s of every analyze to load), and building the
parser loads none of numpy, pandas and pyarrow (analyze starts its worker processes,
parallel.start_early, before it loads the analysis, so that both load at once)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "samples" / "mixed"
CHECK = ("import sys; from natlens.cli import main; rc = main(['analyze', sys.argv[1]] + sys.argv[2:]); "
         "print(rc, sorted(m for m in ('nbformat', 'jsonschema', 'papermill', 'nbconvert') if m in sys.modules))")


def _loaded(*extra: str) -> str:
    r = subprocess.run([sys.executable, "-c", CHECK, str(SAMPLE), *extra], capture_output=True, text=True, check=True)
    return r.stdout.strip().splitlines()[-1]


def test_analyze_loads_no_notebook_machinery():
    assert _loaded() == "0 []"


def test_analyze_anonymize_still_works():
    assert _loaded("--anonymize").startswith("0 ")


def test_building_the_parser_loads_no_pandas_numpy_or_pyarrow():
    code = ("import sys; from natlens.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('pandas', 'numpy', 'pyarrow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
