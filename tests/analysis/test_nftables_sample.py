"""The analysis of data/samples/nftables-local against its ground truth.

kube-proxy nftables mode, ipMode Proxy, externalTrafficPolicy Local: 20 connections, 14 time
out (11 loopbacks, 3 of them DNATed by the client's node to web-2 on node-2, and 3 asymmetric
returns via node-2), 6 connect. What the analysis says must be what happened, or unknown.
"""

from __future__ import annotations

import pandas as pd
import pytest
from analysis_helpers import samples_dir

from natlens.findings import analyze

NAME = "nftables-local"


@pytest.fixture(scope="module")
def sample():
    return samples_dir() / NAME


@pytest.fixture(scope="module")
def a(sample):
    return analyze(sample)


@pytest.fixture(scope="module")
def m(a, sample):
    gt = pd.read_json(sample / "ground-truth" / "connections.jsonl", lines=True)
    j = gt.merge(a.journeys, left_on=["src", "sport", "dst", "dport"],
                 right_on=["client_h", "client_p", "vip", "vport"], how="left")
    assert j["journey"].notna().all() and len(j) == len(gt) == 20
    return j


def test_every_failure_is_a_time_out_from_the_clients_own_record(a, m):
    failed = m["outcome_x"] == "failed"
    assert (m.loc[failed, "error"] == "timeout").all() and failed.sum() == 14
    assert (m.loc[failed, "outcome_y"] == "timed out").all()
    assert (m.loc[~failed, "outcome_y"] == "established").all()
    # the client's own record decides: not a bridge record holding only its RST
    assert not m["outcome_evidence"].str.contains("no SYN seen").any()
    assert a.summary()["connections"] == {**a.summary()["connections"], "total": 20, "failed": 14,
                                          "timeouts": 14, "resets": 0}
