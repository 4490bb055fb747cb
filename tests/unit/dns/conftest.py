import pytest
from dns_support import Upstream


@pytest.fixture(scope="module")
def upstream():
    server = Upstream()
    server.start()
    yield server
    server.stop()
