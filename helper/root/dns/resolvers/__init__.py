"""OS resolver configurators: base (the interface), linux_nft, and choose (mode per host)."""
