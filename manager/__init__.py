"""The traffic-manager: what runs in the cluster. Its API face, shared with clients, is ``tether.manager.api``."""
