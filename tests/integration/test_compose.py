"""``docker-compose.yml`` validates offline (docker-compose v1) and describes the deployment."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = shutil.which("docker-compose")

pytestmark = pytest.mark.skipif(COMPOSE is None, reason="docker-compose is not installed")


def config(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [COMPOSE, "-f", str(path), "config"],
        capture_output=True,
        text=True,
        cwd=path.parent,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_compose_file_is_valid_and_wires_the_services():
    out = config(ROOT / "docker-compose.yml")
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)
    services = cfg["services"]
    assert set(services) >= {"redis", "api", "worker", "flower"}
    assert "--appendonly" in services["redis"]["command"]
    assert "yes" in services["redis"]["command"]
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["count"] == 1 and "gpu" in gpu["capabilities"]
    assert "--pool=solo" in services["worker"]["command"]
    # the API and every worker see the same store volume and the same Redis
    mounts = {s: {v.split(":")[0] for v in services[s]["volumes"]} for s in ("api", "worker")}
    assert mounts["api"] == mounts["worker"] == {"models-store"}
    assert "models-store" in cfg["volumes"]
    for s in ("api", "worker"):
        env = services[s]["environment"]
        assert env["BASIN_REDIS_URL"] == "redis://redis:6379/0"
        assert env["BASIN_STORE"] == "/data/models_store"
    assert (ROOT / "Dockerfile").is_file() and services["api"]["build"]["context"]
    # Flower lists every task's arguments (run ids = share links): opt-in, loopback only,
    # and it will not start without a login
    flower = services["flower"]
    assert flower["profiles"] == ["monitoring"]
    assert all(str(p).startswith("127.0.0.1:") for p in flower["ports"]), flower["ports"]
    assert 'test -n "$$FLOWER_BASIC_AUTH"' in " ".join(flower["entrypoint"])


def test_a_broken_compose_file_is_rejected(tmp_path):
    bad = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    bad["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"] = "all-the-gpus"
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(bad))
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    out = config(tmp_path / "docker-compose.yml")
    assert out.returncode != 0
    assert "devices" in out.stderr
