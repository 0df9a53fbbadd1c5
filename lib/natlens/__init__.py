"""natlens: post-incident analysis of Kubernetes service networking.

Layers (DESIGN.md section 3), data flowing one way, top to bottom:

    capture      pcap/pcapng records -> packet table
    netfilter    iptables-save / ipset / ipvsadm -> rule model -> packet verdicts
    inventory    nodes, pods, services (kubectl JSON or inferred)
    connections  packet table -> one record per connection per capture point
    journeys     connections of all capture points -> one journey per client connection
    findings     SNAT ratios, loopback hits, latency, verdict
    report       notebooks -> HTML + summary.json
    lab          real-kernel reproduction in network namespaces
    cli          `natlens ...`

Shared by every layer: vocab (the words natlens answers in), nodefiles (the one place
that finds a node's files), errors (the one error type users see).
"""

from natlens.errors import NatlensError

__version__ = "0.1.0"
__all__ = ["NatlensError", "__version__"]
