"""docker-compose.yml, the Dockerfile and Grafana provisioning, checked structurally (no container
engine runs here): the stack must wire exactly the files and names the other tests prove."""

from __future__ import annotations

import posixpath
import re

import pytest
import yaml

from grafana_queries import DASHBOARDS, PROMETHEUS, REPO, load_dashboards
from sidecar.config import config_from_dict

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
GRAFANA_PROVISIONING = REPO / "grafana" / "provisioning"
# Public images, pinned to released tags (Docker Hub is not reachable from the test machines;
# both tags are in use by public projects: prom/prometheus:v2.55.1, grafana/grafana:11.3.0).
PUBLIC_IMAGES = {"prometheus": r"prom/prometheus:v2\.\d+\.\d+", "grafana": r"grafana/grafana:1\d\.\d+\.\d+"}


def _mounts(service: str) -> dict[str, str]:
    """Container path -> host source (relative path or volume name)."""
    out = {}
    for spec in SERVICES[service].get("volumes", []):
        source, target, *_ = spec.split(":")
        out[target] = source
    return out


def _sidecar_config() -> dict:
    target = SERVICES["sidecar"]["command"][SERVICES["sidecar"]["command"].index("--config") + 1]
    source = _mounts("sidecar")[target]
    return yaml.safe_load((REPO / source).read_text())


def test_the_stack_has_the_sidecar_the_demo_prometheus_and_grafana():
    assert set(SERVICES) == {"sidecar", "demo", "prometheus", "grafana"}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_bind_mount_source_exists_in_the_repository(service):
    for source in _mounts(service).values():
        if source.startswith("."):
            assert (REPO / source).exists(), f"{service}: {source} does not exist"
        else:
            assert source in COMPOSE["volumes"], f"{service}: volume {source} is not declared"


def test_third_party_images_are_public_and_pinned_and_ours_is_built_here():
    for service, pattern in PUBLIC_IMAGES.items():
        assert re.fullmatch(pattern, SERVICES[service]["image"]), SERVICES[service]["image"]
    for service in ("sidecar", "demo"):
        assert SERVICES[service]["build"] == "." and "image" not in SERVICES[service]


def test_dockerfile_is_a_plain_python_image_running_the_cli_as_a_non_root_user():
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert "pip install --no-cache-dir ." in text
    assert re.search(r"^USER [1-9]\d*:[1-9]\d*$", text, re.M)  # numeric: test_kubernetes.py ties it to the pod's uid
    assert 'ENTRYPOINT ["agent-sidecar"]' in text
    # The socket volume's mount point exists in the image, owned by that user, so a fresh volume is writable.
    assert "install -d -o sidecar -g sidecar -m 0770 /run/agent-sidecar" in text
    for copied in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for path in copied.split():
            assert (REPO / path).exists(), path


def test_sidecar_config_is_valid_and_listens_where_prometheus_and_the_demo_look():
    config = config_from_dict(_sidecar_config())
    host, port = config.listen.http.rsplit(":", 1)
    assert host == "0.0.0.0"  # reachable from the prometheus container
    scrape = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["job_name"] == "agent-sidecar"  # SidecarDown matches this job
    assert job["static_configs"][0]["targets"] == [f"sidecar:{port}"]
    assert SERVICES["sidecar"]["ports"] == [f"{port}:{port}"]
    # The demo writes to the socket the sidecar listens on, through the same named volume.
    demo = SERVICES["demo"]["command"]
    assert demo[0] == "demo" and demo[demo.index("--unix") + 1] == config.listen.unix
    socket_dir = posixpath.dirname(config.listen.unix)
    assert _mounts("sidecar")[socket_dir] == _mounts("demo")[socket_dir] in COMPOSE["volumes"]
    assert SERVICES["demo"]["depends_on"]["sidecar"]["condition"] == "service_healthy"
    # The image's HEALTHCHECK asks the sidecar's HTTP port, which the demo container does not serve.
    assert SERVICES["demo"]["healthcheck"] == {"disable": True}


def test_prometheus_keeps_exemplars_and_reads_the_tested_config_and_rules():
    command = SERVICES["prometheus"]["command"]
    assert "--enable-feature=exemplar-storage" in command
    (config_file,) = [c.split("=", 1)[1] for c in command if c.startswith("--config.file=")]
    assert _mounts("prometheus")[posixpath.dirname(config_file)] == "./prometheus"
    assert posixpath.basename(config_file) == "prometheus.yml"


def test_grafana_provisions_the_datasource_the_dashboards_default_to_and_loads_the_dashboards():
    mounts = _mounts("grafana")
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    (datasource,) = yaml.safe_load((GRAFANA_PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["jsonData"]["exemplarTraceIdDestinations"][0]["name"] == "trace_id"
    for dash in load_dashboards().values():
        (var,) = [v for v in dash["templating"]["list"] if v["name"] == "datasource"]
        assert var["current"]["value"] == datasource["uid"]
    (provider,) = yaml.safe_load((GRAFANA_PROVISIONING / "dashboards" / "agent-sidecar.yml").read_text())["providers"]
    path = provider["options"]["path"]
    assert mounts[path] == "./" + DASHBOARDS.relative_to(REPO).as_posix()
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert posixpath.dirname(home) == path and (DASHBOARDS / posixpath.basename(home)).exists()
