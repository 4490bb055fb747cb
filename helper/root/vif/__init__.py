"""The virtual interface: the TUN device per OS and the userspace network stack behind it."""
