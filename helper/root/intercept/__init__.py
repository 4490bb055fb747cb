"""Intercepts on the helper's side: setting them up (``service``), answering intercepted connections
(``answer``), and the hook that mounts the pod's volumes (``volumes``)."""
