"""The tray's settings file: defaults, round trip, atomic 0600 writes, and errors that name the file and key."""

import json
import stat

import pytest
from gui_pem_support import ca_pem

from tether.gui.clusters import AddedCluster
from tether.gui.settings import Settings, SettingsError, SettingsStore, default_path, validate
from tether.helper.api.validate import ValidationError


def full_settings() -> Settings:
    return Settings(
        dns_include_suffixes=(".corp.example", "internal.example"),
        dns_exclude_suffixes=(".com",),
        also_proxy=("192.168.50.0/24",),
        never_proxy=("10.20.0.0/16", "fd00::/64"),
        virtual_subnet="100.64.0.0/16",
        start_at_login=True,
        clusters=(AddedCluster("staging", "https://k8s.example.com:6443", ca_pem(), "apps"),),
    )


def test_default_path_is_in_the_user_config_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_path() == tmp_path / "tether" / "tray.json"
    assert SettingsStore().path == tmp_path / "tether" / "tray.json"


def test_missing_file_gives_defaults(tmp_path):
    store = SettingsStore(tmp_path / "nope" / "tray.json")
    assert store.load() == Settings()
    assert store.load_or_defaults() == (Settings(), None)


def test_round_trip_atomic_and_private(tmp_path):
    store = SettingsStore(tmp_path / "tether" / "tray.json")
    settings = full_settings()
    store.save(settings)
    assert store.load() == settings
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert [p.name for p in store.path.parent.iterdir()] == ["tray.json"]  # no temporary file left behind
    data = json.loads(store.path.read_text())
    assert data["version"] == 1
    assert data["clusters"][0]["name"] == "staging"
    # Saving again replaces the file whole.
    store.save(Settings(start_at_login=False))
    assert store.load() == Settings()


def test_corrupt_json_names_the_file(tmp_path):
    path = tmp_path / "tray.json"
    path.write_text('{"also_proxy": ["10.0.0.0/8",')
    with pytest.raises(SettingsError) as caught:
        SettingsStore(path).load()
    assert str(path) in str(caught.value)
    assert "not valid JSON at line 1" in str(caught.value)
    settings, error = SettingsStore(path).load_or_defaults()
    assert settings == Settings() and isinstance(error, SettingsError)
    assert path.read_text() == '{"also_proxy": ["10.0.0.0/8",'  # left for the user to fix


@pytest.mark.parametrize(
    ("content", "key", "detail"),
    [
        ({"also_proxy": ["10.0.0.1/8"]}, "also_proxy", "did you mean 10.0.0.0/8"),
        ({"never_proxy": "10.0.0.0/8"}, "never_proxy", "must be a list of strings"),
        ({"dns_include_suffixes": ["corp example"]}, "dns_include_suffixes", '"corp example" is not a domain suffix'),
        ({"virtual_subnet": "100.64.0.0"}, "virtual_subnet", '"100.64.0.0" has no prefix length'),
        ({"start_at_login": "yes"}, "start_at_login", "must be true or false"),
        ({"clusters": [{"name": "x", "server": "http://k", "ca_pem": ""}]}, "clusters[0]", "must start with https://"),
        ({"clusters": {}}, "clusters", "must be a list"),
        ({"version": 9}, "version", "format 9"),
    ],
)
def test_bad_values_name_file_key_and_value(tmp_path, content, key, detail):
    path = tmp_path / "tray.json"
    path.write_text(json.dumps(content))
    with pytest.raises(SettingsError) as caught:
        SettingsStore(path).load()
    assert caught.value.key == key
    assert f'{path}: "{key}"' in str(caught.value)
    assert detail in str(caught.value)


def test_not_an_object(tmp_path):
    path = tmp_path / "tray.json"
    path.write_text("[1, 2]")
    with pytest.raises(SettingsError, match="expected a JSON object, found list"):
        SettingsStore(path).load()


def test_dns_suffixes_use_the_helpers_rule_and_keep_what_the_user_wrote():
    good = Settings(
        dns_include_suffixes=(".corp.example", "corp.example", "a-b.example."), dns_exclude_suffixes=(".com",)
    )
    validate(good)
    for bad in ("", ".", "corp..example", "-corp.example", "corp example", "x" * 64 + ".com"):
        with pytest.raises(ValidationError, match="is not a domain suffix"):
            validate(Settings(dns_include_suffixes=(bad,)))


def test_validate_names_the_field_and_value_and_save_refuses(tmp_path):
    with pytest.raises(ValidationError, match=r'also-proxy: "10\.1\.2\.3/16" has host bits set'):
        validate(Settings(also_proxy=("10.1.2.3/16",)))
    with pytest.raises(ValidationError, match=r'exclude DNS suffixes: "\.c\*m" is not a domain suffix'):
        validate(Settings(dns_exclude_suffixes=(".c*m",)))
    cluster = AddedCluster("dup", "https://k", ca_pem())
    with pytest.raises(ValidationError, match='"dup" is used twice'):
        validate(Settings(clusters=(cluster, cluster)))
    store = SettingsStore(tmp_path / "tray.json")
    with pytest.raises(ValidationError):
        store.save(Settings(never_proxy=("nope",)))
    assert not store.path.exists()
