"""Cluster discovery: which subnets the cluster's services and pods live in.

Three layers, so the rules can be tested without an API server:

* pure rules — :mod:`.decode` turns the API server's raw JSON into plain values
  (:class:`~.decode.NodeInfo`, :class:`~.decode.PodInfo`, a refusal's text) and
  :mod:`.strategy` picks the pod subnets by the chart's ``podCIDRStrategy``;
  the subnet arithmetic itself (covering pod IPs, reading the service range out
  of a refusal) is :mod:`tether.manager.subnets`;
* :mod:`.tracker` — :class:`~.tracker.NetworkTracker` applies list results and
  watch events to in-memory maps and publishes a
  :class:`~.tracker.ClusterNetwork` when the network really changes (no I/O,
  no threads of its own);
* the I/O — :mod:`.kubeapi` makes the one-shot requests (paged lists, the
  service-CIDR probe, service-subnet discovery) and :mod:`.watcher`'s
  :class:`~.watcher.ClusterDiscovery` lists and watches nodes and pods with the
  official (synchronous) client in daemon threads.
"""
