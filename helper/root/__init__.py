"""What runs as root in ``tether-helper``: the daemon and its server, the session, the VIF, routing, DNS,
cleanup. Nothing here imports the user side (``tether.helper.user``)."""
