"""The helper's local API: the gRPC server, caller identity, authorization and the client library.

Nothing in this package needs Qt; the client side (``client``, ``paths``, ``validate``) needs no root.
"""
