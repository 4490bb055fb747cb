"""The ConnectRequest the tray builds: cluster, settings, resolution; every failure a RequestError."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_gui_support import Options, write_kubeconfig

from tether.gui.clusters import VaultError
from tether.gui.connect_request import RequestError, build_request
from tether.gui.contexts import Cluster, Source
from tether.gui.settings import SettingsError
from tether.helper.user.resolutions import Resolution


def test_kubeconfig_context_with_settings_and_resolution(tmp_path):
    request = build_request(
        Cluster("staging"),
        Resolution(proxy_via=("all=default/web",)),
        settings=lambda: Options(
            also_proxy=("192.168.0.0/16",),
            virtual_subnet="250.1.0.0/16",
            dns_include_suffixes=(".corp.example",),
            dns_exclude_suffixes=(".internal",),
        ),
        kubeconfig=write_kubeconfig(tmp_path),
        environ={"KUBE_TOKEN_CACHE": "/tmp/x", "BAD-NAME": "dropped"},
    )
    assert (request.context, request.client_name) == ("staging", "tether-tray")
    assert "staging.example" in request.kubeconfig and "127.0.0.1" not in request.kubeconfig
    assert list(request.also_proxy) == ["192.168.0.0/16"] and request.virtual_subnet == "250.1.0.0/16"
    assert list(request.proxy_via) == ["all=default/web"] and not request.auto_resolve
    assert list(request.dns_include_suffixes) == [".corp.example"]
    assert list(request.dns_exclude_suffixes) == [".internal"]
    assert dict(request.environment) == {"KUBE_TOKEN_CACHE": "/tmp/x"}


def test_kubeconfig_from_the_environment(tmp_path):
    path = write_kubeconfig(tmp_path)
    request = build_request(Cluster("lab"), settings=Options, environ={"KUBECONFIG": str(path)})
    assert request.context == "lab" and "127.0.0.1:6443" in request.kubeconfig


def test_unknown_context_names_the_file(tmp_path):
    path = write_kubeconfig(tmp_path)
    with pytest.raises(RequestError, match=f'context "nope" not found in {path}'):
        build_request(Cluster("nope"), settings=Options, kubeconfig=path, environ={})


def test_a_bad_settings_file_or_keychain_is_a_request_error(tmp_path):
    def broken_settings():
        raise SettingsError(Path("/home/dev/.config/tether/tray.json"), "never_proxy", "must be a list of strings")

    with pytest.raises(RequestError, match=r'tray.json: "never_proxy": must be a list of strings'):
        build_request(Cluster("lab"), settings=broken_settings, kubeconfig=write_kubeconfig(tmp_path), environ={})

    def locked(name):
        raise VaultError(f'the OS keychain is unavailable (reading the token of "{name}"): locked')

    with pytest.raises(RequestError, match="keychain is unavailable"):
        build_request(Cluster("edge", Source.ADDED), settings=Options, kubeconfig_text_for=locked, environ={})
