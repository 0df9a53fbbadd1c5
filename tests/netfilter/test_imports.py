"""The netfilter model stays light: importing it must not pull in pandas.

pandas' hundreds of thousands of objects made every garbage collection during a big
load slower (an IPVS-mode dump of 10,000 Services: 0.7 s -> 1.7 s when natlens.vocab,
which the walk imports, imported pandas)."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_netfilter_model_does_not_import_pandas():
    code = "import sys, natlens.netfilter, natlens.cli.explain; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
