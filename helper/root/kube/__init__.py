"""Kubernetes as the root helper uses it: credentials (exec plugins run as the caller) and cluster calls."""
