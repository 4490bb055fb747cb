"""The lab's controller: what kubelet, the scheduler, the deployment controller, the endpoints and
endpointslice controllers and kube-proxy do in a real cluster, in one process that works through the API
server like they do.

It runs Deployments' pods as processes in network namespaces on the lab's bridge (see :mod:`.kubelet`),
keeps each Deployment's pods at its replicas and template (:mod:`.rollout`), the Services' Endpoints and
EndpointSlices at their pods (:mod:`.endpoints`) and the router's ClusterIP rules at the ready ones. Images
name local entrypoints (:mod:`.images`). :mod:`.main` is the process.
"""
