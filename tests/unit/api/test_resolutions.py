from tether.helper.user.resolutions import Resolution, ResolutionStore


def test_remember_get_forget_round_trip(tmp_path):
    store = ResolutionStore(tmp_path / "tether" / "resolutions.json")
    assert store.get("lab") is None
    chosen = Resolution(proxy_via=("all=web",), auto_resolve=False)
    store.remember("lab", chosen)
    store.remember("prod", Resolution(allow_conflicting_subnets=("10.96.0.0/12",)))
    assert store.get("lab") == chosen
    assert store.get("prod").describe() == "--allow-conflicting-subnets 10.96.0.0/12"
    store.forget("lab")
    assert store.get("lab") is None
    assert store.get("prod") is not None


def test_unreadable_or_malformed_files_are_ignored(tmp_path):
    path = tmp_path / "resolutions.json"
    path.write_text("{not json")
    assert ResolutionStore(path).get("lab") is None
    path.write_text('{"lab": {"proxy_via": "all=web"}, "x": {"auto_resolve": true}}')
    store = ResolutionStore(path)
    assert store.get("lab") is None, "a string where a list belongs is not a resolution"
    assert store.get("x") == Resolution(auto_resolve=True)
    assert Resolution().describe() == "none" and Resolution().empty
