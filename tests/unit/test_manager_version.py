"""The manager image's tag, as `make image` writes it and the injector names it."""

import pytest

from tether.manager.api.sidecar import DEFAULT_AGENT_IMAGE
from tether.manager.api.version import MANAGER_IMAGE, __version__, image_tag


@pytest.mark.parametrize(
    ("version", "tag"),
    [("0.1.0", "0.1.0"), ("0.0.0+source", "0.0.0_source"), ("1.2.0rc1.dev3+g1a2b3c4", "1.2.0rc1.dev3_g1a2b3c4")],
)
def test_a_version_becomes_a_tag(version, tag):
    assert image_tag(version) == tag


@pytest.mark.parametrize("version", ["1!2.0", "", ".1.0", "1.0/evil", "1" * 129, "1.0 2"])
def test_a_version_no_tag_can_hold_is_refused_by_name(version):
    with pytest.raises(ValueError) as caught:
        image_tag(version)
    assert repr(version) in str(caught.value)


def test_the_injector_names_the_image_make_image_builds():
    name, _, tag = DEFAULT_AGENT_IMAGE.partition(":")
    assert name == MANAGER_IMAGE == "tether-manager"
    assert tag == image_tag(__version__)
    assert "+" not in tag
