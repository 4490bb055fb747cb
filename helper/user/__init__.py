"""What runs as the user: the ``tether`` CLI, the client library, the resolution store, kubeconfig reading."""
