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
        dockerfile = (ROOT / service["build"]["dockerfile"]).read_text()
        assert "pip install --no-cache-dir -c constraints" in dockerfile  # pinned images
    # the worker cannot start without its token, nor the datastore without an auth file
    assert sg["environment"]["SSSD_TOKEN"].startswith("${SSSD_WORKER_TOKEN:?")
    assert spec["secrets"]["sssd_auth"]["file"].startswith("${SSSD_AUTH_FILE:?")


@pytest.mark.skipif(not shutil.which("docker-compose"), reason="docker-compose is not installed")
def test_compose_config_validates():
    import os

    env = {**os.environ, "SSSD_AUTH_FILE": "./deploy/auth.example.json", "SSSD_WORKER_TOKEN": "t"}
    r = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                       capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr


def test_kubernetes_manifest_has_one_writer_and_followers():
    docs = {(d["kind"], d["metadata"]["name"]): d
            for d in yaml.safe_load_all((ROOT / "deploy/k8s/sssd-datastore.yaml").read_text())}
    writer = docs[("StatefulSet", "sssd-writer")]["spec"]
    replicas = docs[("Deployment", "sssd-read")]["spec"]["template"]["spec"]["containers"][0]
    assert writer["replicas"] == 1 and writer["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    w = writer["template"]["spec"]["containers"][0]
    assert w["readinessProbe"]["grpc"]["port"] == 50051 and w["livenessProbe"]["grpc"]["port"] == 50051
    assert "--follow" not in w["args"] and "/data/sssd.db" in w["args"]
    follow = replicas["args"][replicas["args"].index("--follow") + 1]
    assert follow == "sssd-writer:50051" and ("Service", "sssd-writer") in docs
    assert replicas["readinessProbe"]["grpc"]["port"] == 50051
    assert docs[("Service", "sssd-read")]["spec"]["clusterIP"] == "None"  # DNS lists every replica
    assert any(e["name"] == "SSSD_FOLLOW_TOKEN" for e in replicas["env"])
    # a memory limit: the writer's default cap on live tokens is half of it (else half the node's)
    assert w["resources"]["limits"]["memory"] == replicas["resources"]["limits"]["memory"] == "16Gi"
    # every flag the manifest passes is one `sssd serve` knows
    from datastore_service.server import ServerConfig
    from sssd_wire import settings

    knobs = {settings.flag_name(leaf) for leaf in settings._leaf_index(ServerConfig)}
    for args in (w["args"], replicas["args"]):
        assert {a for a in args if a.startswith("--")} <= knobs
    # the auth file's Secret is not mounted readable by everyone (Kubernetes' 0644: the server warns)
    for kind, name in (("StatefulSet", "sssd-writer"), ("Deployment", "sssd-read")):
        secrets = [v["secret"] for v in docs[(kind, name)]["spec"]["template"]["spec"]["volumes"] if "secret" in v]
        assert secrets and all(not s.get("defaultMode", 0o644) & 0o004 for s in secrets), (name, secrets)


def test_kubernetes_manifest_gives_every_server_the_rates_configmap(tmp_path):
    """The namespaces' rates come from one ConfigMap, mounted where writer and replicas read
    --namespace-rates-file, and its content is a rates file the server loads."""
    from datastore_service.rates import read_rates

    docs = {(d["kind"], d["metadata"]["name"]): d
            for d in yaml.safe_load_all((ROOT / "deploy/k8s/sssd-datastore.yaml").read_text())}
    data = docs[("ConfigMap", "sssd-rates")]["data"]
    for kind, name in (("StatefulSet", "sssd-writer"), ("Deployment", "sssd-read")):
        pod = docs[(kind, name)]["spec"]["template"]["spec"]
        args, mounts = pod["containers"][0]["args"], pod["containers"][0]["volumeMounts"]
        path = Path(args[args.index("--namespace-rates-file") + 1])
        volume = next(m["name"] for m in mounts if m["mountPath"] == str(path.parent))
        assert next(v for v in pod["volumes"] if v["name"] == volume)["configMap"]["name"] == "sssd-rates"
        assert path.name in data
    (tmp_path / "rates.json").write_text(data["rates.json"])
    assert read_rates(str(tmp_path / "rates.json")) == {}
