"""Kubernetes credentials: flattening a user's kubeconfig (client side) and using it as root (helper side)."""
