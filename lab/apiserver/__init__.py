"""The sandbox cluster's Kubernetes API server: an emulator the official client talks to over HTTP.

It is built on kmock's ``KubernetesEmulator``, which supplies the object store (``objects``), ``/version``,
the Status error format and the HTTP plumbing. kmock 0.8 is a
test double, not an API server, so the emulator serves the resource URLs itself: kmock's router
cannot parse ``/api/v1/namespaces``, ignores selectors, has no PUT, no ``watch=1``, no
resourceVersion and no subresources. What it adds, module by module:

* ``kinds``: the served resource types; ``routing``: URLs and apiVersion/kind to those types;
* ``errors``: refusals worded and shaped like kube-apiserver's Status objects;
* ``discovery``: legacy and aggregated API discovery built from the kinds (subresources in their resource's
  entry, so kubectl resolves short names without warnings), and ``/version``; ``openapi``: the OpenAPI v3
  index and operations kubectl reads before ``apply``; ``strict``: ``fieldValidation=Strict`` (unknown
  fields refused, by path); ``negotiation``: which representation ``Accept`` asks for;
* ``printers`` and ``tables``: meta.k8s.io/v1 Tables with the API server's columns for each kind
  (``kubectl get``);
* ``store``: create / get / replace / patch / delete and the ``status`` subresource, with the metadata
  the server owns (uid, creationTimestamp, generation, a global resourceVersion);
* ``admission`` and ``allocation``: defaults and validation the way kube-apiserver does them where it
  matters to the lab, including Service ClusterIP and NodePort allocation with the API server's own
  error messages (Tether learns the service CIDR by parsing them), and a check that every stored
  object is readable by the strict official models;
* ``patches``: merge, strategic merge and JSON patch; ``selectors``: label and field selectors;
* ``rollout``: a Deployment's status from the pods its selector picks, which the store keeps up to date as
  pods and Deployments change (the lab has no deployment controller); the store also deletes an owner's
  dependents (ownerReferences) as the garbage collector would, per ``propagationPolicy``;
* ``history`` and ``watch``: list and watch with selectors, ``resourceVersion`` (410 Gone once the
  event history no longer reaches back that far), ``timeoutSeconds`` and streaming lists
  (``sendInitialEvents``, ended by a bookmark);
* ``portforward``: the ``pods/portforward`` subresource over a websocket (``v4.channel.k8s.io``),
  dialing the pod IP;
* ``tokens``: service-account tokens bound to pods (the lab issues them as the kubelet would) and
  TokenReview (``authentication.k8s.io/v1``) over them;
* ``emulator``: the HTTP face that routes each request to the above; ``server``: serving it, in the
  current event loop or on a thread of its own; ``main``: the process.

Store operations are synchronous and run on the event loop thread, so each is atomic without locks.

Run it with ``python -m tether.lab.apiserver --listen HOST:PORT --service-cidr CIDR``.
"""
