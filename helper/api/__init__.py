"""The helper's API face, spoken on both sides of its socket.

The generated stubs (``helper_pb2``), the checks every request passes on either side (``validate``,
``proxyvia``) and where the sockets live (``paths``). It imports nothing else of the helper.
"""
