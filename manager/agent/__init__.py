"""tether-agent: a small process next to a workload that dials flows from inside the workload's pod."""
