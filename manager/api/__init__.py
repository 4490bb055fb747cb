"""The traffic-manager's API face: everything the manager, the helper and the agent speak to each other.

The generated stubs (``manager_pb2``), the tunnel mux frames (``muxframe``) and stream protocol (``mux``),
tunnel message framing (``framing``), writing a flow's messages to its gRPC stream (``streamwriter``), wire
conversions (``wire``), the gRPC options every channel and server uses (``grpcopts``) and the version
(``version``). It imports nothing else of the manager, so a client loads only this.
"""
