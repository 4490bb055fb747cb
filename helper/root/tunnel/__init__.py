"""The helper's side of the manager link: the session, the tunnel mux client, and flow streams."""
