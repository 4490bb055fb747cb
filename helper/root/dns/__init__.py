"""The helper's DNS: name rules, answer cache, the server, and the OS resolver integration.

rules (pure: which names go to the cluster) · cache (answers, TTLs, coalescing) · wire (pure:
parsing and packing) · upstream (marked forwarding) · server (asyncio UDP+TCP) · resolvers/ (how
the OS is pointed at the server, one implementation per mechanism).
"""
