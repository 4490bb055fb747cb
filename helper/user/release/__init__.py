"""`tether manager install|upgrade|uninstall|status`: the traffic-manager's Helm chart, rendered and applied
through the Kubernetes API with the user's own credentials.

Pure parts: :mod:`.chart` (where the chart is, its version), :mod:`.values` (``--set`` and ``--values``),
:mod:`.plan` (what to create, patch and delete, and the release record). I/O: :mod:`.render` (Helm through
helm-python-sdk), :mod:`.kube` (the API calls), :mod:`.ops` (install, upgrade, uninstall, status).
"""
