# Run as root: the sandbox cluster is built out of network namespaces.
PYTHON ?= python3
APT_PACKAGES = iproute2 nftables iptables dnsmasq-base curl procps

.PHONY: deps demo test lint protos

deps:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; fi
	$(PYTHON) -m pip install -q -e '.[dev]'

# The main job: build the sandbox cluster and show what its traffic-manager discovered.
demo: deps
	tether lab up
	tether lab run -- tether cluster-info --kubeconfig "$$(tether lab kubeconfig)"

test: deps
	ruff check .
	ruff format --check .
	$(PYTHON) -m pytest -q -p no:cacheprovider

protos:
	$(PYTHON) resources/proto/generate.py
