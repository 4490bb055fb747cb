"""Reaching a cluster, for either side: the API server's pod port-forward and a gRPC channel to the manager.

The root helper's session rides it, and so does ``tether cluster-info`` as the user.
"""
