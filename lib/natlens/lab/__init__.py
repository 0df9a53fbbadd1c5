"""Reproduction lab: the load-balancer loopback incident on the real kernel, in namespaces.

``natlens lab run`` (:func:`natlens.lab.run.run`) builds a routed VPC namespace
playing the cloud LB, Kubernetes nodes with kube-proxy's rules in IPVS (iptables +
ipsets + an nft stand-in for IPVS), iptables or nftables mode, LoadBalancer
Services with ingress ipMode VIP or Proxy, pods behind a bridge, optionally one
fault (no-endpoints, refused, blackhole, reply-drop), runs a client that records
every connection, and writes an incident bundle (DESIGN.md section 2) with
``ground-truth/``, where every failed connection says which mechanism failed it.

Modules: netns (namespaces/processes, cleanup), topology (addresses, build),
rules (kube-proxy rules per mode, ipsets, IPVS stand-in, LB), faults (the faults
and where they act), client, server, bundle (cluster JSON, ground truth), run
(orchestration, :class:`~natlens.lab.run.Testbed`).
"""
