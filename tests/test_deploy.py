"""docker-compose.yml: the structure a deployment relies on, and compose's own validation."""

import shutil
import subprocess
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
ROOT = Path(__file__).resolve().parent.parent


def test_compose_structure():
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    ds, sg = spec["services"]["datastore"], spec["services"]["sglang"]
    assert "/data" in ds["volumes"][0] and ds["healthcheck"]["test"][1:3] == ["sssd", "health"]
    assert sg["depends_on"]["datastore"]["condition"] == "service_healthy"
    assert "--speculative-algorithm" in sg["command"] and "sssd" in sg["command"]
    assert sg["environment"]["SSSD_DATASTORE"] == "datastore:50051"
    assert sg["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    for service in (ds, sg):
        assert (ROOT / service["build"]["dockerfile"]).exists()


@pytest.mark.skipif(not shutil.which("docker-compose"), reason="docker-compose is not installed")
def test_compose_config_validates():
    r = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
