"""OS resolver configurators: base (the interface), fake, linux_nft, and choose (mode per host)."""
