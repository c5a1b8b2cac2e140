"""deploy/kubernetes/ and the Dockerfile, checked offline (no cluster and no container engine run here).

Schemas: every manifest against the Kubernetes 1.29 API schemas (`kubernetes-validate`, strict: an
unknown field is an error, as `kubectl apply` makes it), 1.29 being the first release with native
sidecar containers on by default; the PodMonitor, a CRD that kubernetes-validate has no schema for,
against the Prometheus Operator's own CRD schema (vendored in tests/schemas/).
Behaviour: the ConfigMap's config passes the real `check-config`, and a real sidecar started with
the manifest's args answers the probes and the scrape on the port they name, fed by the example
agent's own args. The Dockerfile's user, healthcheck, entrypoint and writable paths are checked the
same way. Config keys are read from `sidecar.config` at test time, never from a copied list.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import sidecar
from sidecar.cli import build_parser
from sidecar.client import ENV_SOCKET
from sidecar.config import Config, config_from_dict
from sidecar.testing import SidecarProcess

REPO = Path(__file__).resolve().parent.parent
KUBE = REPO / "deploy" / "kubernetes"
SCHEMA_VERSION = "1.29"
PODMONITOR_CRD = Path(__file__).parent / "schemas" / "monitoring.coreos.com_podmonitors.yaml"
KUSTOMIZATION = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
DOCS = [doc for name in KUSTOMIZATION["resources"] for doc in yaml.safe_load_all((KUBE / name).read_text()) if doc]


def _one(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in DOCS if d["kind"] == kind]
    return doc


DEPLOYMENT, CONFIGMAP, SERVICE, PODMONITOR = (_one(k) for k in ("Deployment", "ConfigMap", "Service", "PodMonitor"))
POD = DEPLOYMENT["spec"]["template"]
(SIDECAR,) = POD["spec"]["initContainers"]
(AGENT,) = POD["spec"]["containers"]
VOLUMES = {v["name"]: v for v in POD["spec"]["volumes"]}


def _option(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def _mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Mount path -> the volume mounted there."""
    return {m["mountPath"]: VOLUMES[m["name"]] for m in container["volumeMounts"]}


def _config_text() -> str:
    """The config file the sidecar reads: the ConfigMap key its --config path names."""
    path = _option(SIDECAR["args"], "--config")
    volume = _mounts(SIDECAR)[posixpath.dirname(path)]
    assert volume["configMap"]["name"] == CONFIGMAP["metadata"]["name"]
    return CONFIGMAP["data"][posixpath.basename(path)]


def _config() -> Config:
    return config_from_dict(yaml.safe_load(_config_text()))


def _port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or monitor's port, by number or by the container port's name."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return number


def _written_paths(config: Config) -> list[str]:
    """Every path-valued key of the real Config (the socket today; later ones, e.g. a snapshot,
    too): the sidecar creates these at run time, so each must lie on a writable volume."""

    def walk(node: Any, prefix: str) -> Iterator[tuple[str, Any]]:
        for f in dataclasses.fields(node):
            value = getattr(node, f.name)
            if dataclasses.is_dataclass(value):
                yield from walk(value, f"{prefix}{f.name}.")
            elif f.metadata.get("kind") == "path" and value:
                yield f"{prefix}{f.name}", value

    found = list(walk(config, ""))
    assert found, "sidecar.config has no path-valued key: this check lost its subject"
    return [value for _, value in found]


def _under(path: str, directory: str) -> bool:
    return posixpath.commonpath([path, directory]) == directory


# -- schemas --------------------------------------------------------------------------------------


def test_the_kustomization_applies_every_manifest_in_the_directory():
    on_disk = {p.name for p in KUBE.glob("*.y*ml")} - {"kustomization.yaml"}
    assert sorted(KUSTOMIZATION["resources"]) == sorted(on_disk)
    assert KUSTOMIZATION["kind"] == "Kustomization"
    assert {d["kind"] for d in DOCS} == {"Deployment", "ConfigMap", "Service", "PodMonitor"}


@pytest.mark.parametrize("doc", [d for d in DOCS if d["kind"] != "PodMonitor"], ids=lambda d: d["kind"])
def test_every_manifest_is_valid_against_the_kubernetes_api_schema(doc):
    assert kubernetes_validate.validate(doc, SCHEMA_VERSION, strict=True) == SCHEMA_VERSION


def test_kubernetes_validate_has_no_schema_for_the_podmonitor_so_the_crd_schema_checks_it():
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(PODMONITOR, SCHEMA_VERSION, strict=True)


def _strict(schema: Any) -> Any:
    """The CRD's openAPIV3Schema, with unknown fields refused where the API server would prune them
    (and `kubectl apply`, strict by default since 1.27, refuses them)."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [_strict(v) for v in schema]
    return schema


def _podmonitor_validator() -> jsonschema.Draft7Validator:
    crd = yaml.safe_load(PODMONITOR_CRD.read_text())
    group, version = PODMONITOR["apiVersion"].split("/")
    assert crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == PODMONITOR["kind"]
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    schema = _strict(served["schema"]["openAPIV3Schema"])
    # metadata is the ObjectMeta every object has; the CRD leaves it open, so check it with the core schema.
    schema["properties"]["metadata"] = {"type": "object", "required": ["name"]}
    return jsonschema.Draft7Validator(schema)


def test_the_podmonitor_is_valid_against_the_prometheus_operator_crd_schema():
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in _podmonitor_validator().iter_errors(PODMONITOR)]
    assert errors == []


@pytest.mark.parametrize(
    "doc, path, value",
    [
        (DEPLOYMENT, ["spec", "template", "spec", "initContainers", 0, "securityContext", "readOnlyRootFileSystem"], True),
        (DEPLOYMENT, ["spec", "template", "spec", "initContainers", 0, "ports", 0, "containerPort"], "8765"),
        (PODMONITOR, ["spec", "podMetricsEndpoints", 0, "pathname"], "/metrics"),
        (PODMONITOR, ["spec", "podMetricsEndpoints", 0, "interval"], "15 seconds"),
    ],
    ids=["misspelled-field", "port-as-string", "podmonitor-unknown-field", "podmonitor-bad-duration"],
)
def test_the_schema_checks_catch_a_misspelled_field_or_a_wrong_type(doc, path, value):
    broken = copy.deepcopy(doc)
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    if doc is PODMONITOR:
        assert list(_podmonitor_validator().iter_errors(broken))
    else:
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, SCHEMA_VERSION, strict=True)


# -- the pod ---------------------------------------------------------------------------------------


def test_the_sidecar_is_a_native_sidecar_container_that_starts_before_the_agent():
    assert SIDECAR["restartPolicy"] == "Always"  # an init container that keeps running: K8s >= 1.29
    assert "restartPolicy" not in AGENT
    assert SIDECAR["image"] == AGENT["image"] == KUSTOMIZATION["images"][0]["name"]
    assert KUSTOMIZATION["images"][0]["newTag"] == sidecar.__version__
    # The agent starts only once the startup probe sees every listener up.
    assert SIDECAR["startupProbe"]["httpGet"]["path"] == "/readyz"


def test_pod_and_containers_run_non_root_read_only_unprivileged_as_the_images_user():
    pod = POD["spec"]["securityContext"]
    uid, gid = _dockerfile_user()
    assert pod["runAsNonRoot"] is True
    assert (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]) == (uid, gid, gid)
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in (SIDECAR, AGENT):
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, container["name"]
        assert sc["readOnlyRootFilesystem"] is True, container["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert not sc.get("privileged"), container["name"]
        assert "runAsUser" not in sc and "runAsNonRoot" not in sc, "the pod's settings must not be overridden"


_UNITS = {"m": Decimal("0.001"), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "": Decimal(1)}
# BENCHMARKS.md figures the sidecar's resources are sized from (see the comment in deployment.yaml).
IDLE_RSS = 54 * 2**20  # this config, no events yet
WINDOW_BYTES_HELD, WINDOW_BYTES_GROWING = 59.2, 107.1  # per event held in the windows ("Memory per sample")
SNAPSHOT_BYTES = 42.5  # per event in the window snapshot file (BENCHMARKS.md, "Window snapshots")


def _quantity(value: str) -> Decimal:
    number, unit = re.fullmatch(r"([\d.]+)(m|Mi|Gi|)", str(value)).groups()
    return Decimal(number) * _UNITS[unit]


def test_every_container_has_cpu_and_memory_requests_within_its_limits():
    for container in (SIDECAR, AGENT):
        res = container["resources"]
        for resource in ("cpu", "memory"):
            assert _quantity(res["requests"][resource]) <= _quantity(res["limits"][resource]), (container["name"], resource)


def test_the_sidecars_memory_covers_the_configs_window_cap():
    events = _config().windows.max_events
    res = SIDECAR["resources"]
    assert _quantity(res["requests"]["memory"]) >= IDLE_RSS + Decimal(events * WINDOW_BYTES_HELD)
    assert _quantity(res["limits"]["memory"]) >= IDLE_RSS + Decimal(events * WINDOW_BYTES_GROWING)


def test_probes_scrape_and_service_use_the_port_the_config_listens_on():
    config = _config()
    host, port = config.listen.http.rsplit(":", 1)
    assert host == "0.0.0.0"  # kubelet probes and Prometheus come to the pod IP, not to localhost
    (container_port,) = SIDECAR["ports"]
    assert container_port["containerPort"] == int(port)
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/readyz")):
        get = SIDECAR[probe]["httpGet"]
        assert (get["path"], _port(SIDECAR, get["port"])) == (path, int(port)), probe
    (endpoint,) = PODMONITOR["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    assert _port(SIDECAR, endpoint["port"]) == int(port)
    assert _port(SIDECAR, SERVICE["spec"]["ports"][0]["targetPort"]) == int(port)
    labels = POD["metadata"]["labels"]
    assert PODMONITOR["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert SERVICE["spec"]["selector"].items() <= labels.items()
    assert DEPLOYMENT["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # The alert rules' SidecarDown matches the job prometheus/prometheus.yml scrapes.
    scrape = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    (job,) = [r["replacement"] for r in endpoint["relabelings"] if r["targetLabel"] == "job"]
    assert job == scrape["scrape_configs"][0]["job_name"]


def test_the_agent_writes_to_the_socket_the_sidecar_listens_on_through_the_shared_emptydir():
    config = _config()
    socket_dir = posixpath.dirname(config.listen.unix)
    sidecar_volume, agent_volume = _mounts(SIDECAR)[socket_dir], _mounts(AGENT)[socket_dir]
    assert sidecar_volume is agent_volume and "emptyDir" in sidecar_volume
    env = {e["name"]: e["value"] for e in AGENT["env"]}
    assert env[ENV_SOCKET] == config.listen.unix  # what an agent using the SDK reads
    assert _option(AGENT["args"], "--unix") == config.listen.unix  # what the demo takes


def test_the_window_snapshot_is_on_a_disk_backed_volume_of_its_own():
    # In memory it would count against the container's memory limit, and the socket's volume is 1Mi.
    path = _config().windows.snapshot_path
    assert path, "the example turns windows.snapshot_path on"
    volume = _mounts(SIDECAR)[posixpath.dirname(path)]
    assert volume["emptyDir"].get("medium") != "Memory" and volume is not VOLUMES["agent-sidecar-socket"]
    assert _quantity(volume["emptyDir"]["sizeLimit"]) >= 2 * Decimal(_config().windows.max_events * SNAPSHOT_BYTES)  # file + temp copy


def test_everything_the_sidecar_writes_is_on_an_emptydir_and_the_config_is_read_only():
    writable = [path for path, volume in _mounts(SIDECAR).items() if "emptyDir" in volume]
    for path in _written_paths(_config()):
        assert any(_under(path, d) for d in writable), f"{path} is on the read-only root filesystem"
    (config_mount,) = [m for m in SIDECAR["volumeMounts"] if "configMap" in VOLUMES[m["name"]]]
    assert config_mount["readOnly"] is True


@pytest.mark.parametrize("container", [SIDECAR, AGENT], ids=lambda c: c["name"])
def test_container_args_are_a_command_the_cli_accepts(container):
    args = build_parser().parse_args(container["args"])
    assert args.command == container["args"][0]
    assert "command" not in container  # the image's ENTRYPOINT (agent-sidecar) runs the args


# -- the real thing --------------------------------------------------------------------------------


@pytest.mark.untraced
def test_check_config_accepts_the_configmaps_config(tmp_path, pod_dir):
    # check-config also checks the host (the socket's directory exists): stand the pod's volumes in.
    path = tmp_path / "sidecar.yaml"
    path.write_text(_relocate(_config_text(), SIDECAR, pod_dir))
    result = subprocess.run([sys.executable, "-m", "sidecar", "check-config", str(path)], capture_output=True, text=True, check=False,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{path}: ok"


@pytest.fixture
def pod_dir() -> Iterator[Path]:
    """A short directory to stand in for the pod's volumes (a socket path is at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="k8s-"))
    yield path
    shutil.rmtree(path)


def _relocate(text: str, container: dict[str, Any], root: Path) -> str:
    """Move absolute paths under the container's volume mounts into `root`, leaving the rest as is."""
    for mount_path in sorted(_mounts(container), key=len, reverse=True):
        name = _mounts(container)[mount_path]["name"]
        (root / name).mkdir(exist_ok=True)
        text = re.sub(re.escape(mount_path) + r"(?=/|$|\s|\")", str(root / name), text, flags=re.MULTILINE)
    return text


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _accepted(base: str) -> float:
    _, text = _get(base + "/metrics")
    for family in text_string_to_metric_families(text):
        if family.name == "sidecar_events_accepted":
            return sum(s.value for s in family.samples if s.name.endswith("_total") and s.labels.get("transport") == "unix")
    return 0.0


@pytest.mark.untraced
def test_the_sidecar_started_with_the_manifests_args_answers_probes_and_scrape_and_takes_the_agents_events(pod_dir):
    # The ConfigMap's file in place of its mount, the emptyDir as a directory: everything else as written.
    config_dir = pod_dir / VOLUMES["agent-sidecar-config"]["name"]
    config_dir.mkdir()
    config_path = _option(SIDECAR["args"], "--config")
    (config_dir / posixpath.basename(config_path)).write_text(_relocate(_config_text(), SIDECAR, pod_dir))
    args = json.loads(_relocate(json.dumps(SIDECAR["args"]), SIDECAR, pod_dir))
    assert args[0] == "run"
    proc = SidecarProcess(args[1:], env={"PYTHONPATH": str(REPO)})
    agent = None
    try:
        (port,) = SIDECAR["ports"]
        base = f"http://127.0.0.1:{port['containerPort']}"
        assert proc.url.endswith(f":{port['containerPort']}")  # the config's port, not one picked for the test
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            get = SIDECAR[probe]["httpGet"]
            status, _ = _get(f"http://127.0.0.1:{_port(SIDECAR, get['port'])}{get['path']}")
            assert status == 200, probe
        (endpoint,) = PODMONITOR["spec"]["podMetricsEndpoints"]
        status, text = _get(f"http://127.0.0.1:{_port(SIDECAR, endpoint['port'])}{endpoint['path']}")
        assert status == 200 and "sidecar_events_received_total" in text
        # The example agent, with its own args and env, feeds the sidecar through the shared directory.
        agent_args = json.loads(_relocate(json.dumps(AGENT["args"]), AGENT, pod_dir))
        env = {e["name"]: _relocate(e["value"], AGENT, pod_dir) for e in AGENT["env"]}
        agent = subprocess.Popen([sys.executable, "-m", "sidecar", *agent_args], env={**os.environ, **env, "PYTHONPATH": str(REPO)},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while _accepted(base) == 0 and agent.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _accepted(base) > 0, agent.stderr.read().decode() if agent.poll() is not None else "no event arrived in 30s"
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(10)
            agent.stderr.close()
        assert proc.stop() == 0


# -- the Dockerfile --------------------------------------------------------------------------------

DOCKERFILE = (REPO / "Dockerfile").read_text()


def _instruction(name: str) -> list[str]:
    """Every value of a Dockerfile instruction, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [m[1].strip() for m in re.finditer(rf"^{name}\s+(.+)$", text, re.MULTILINE)]


def _dockerfile_user() -> tuple[int, int]:
    (user,) = _instruction("USER")
    uid, gid = re.fullmatch(r"(\d+):(\d+)", user).groups()  # numeric, or runAsNonRoot cannot verify it
    return int(uid), int(gid)


def _baked_config() -> tuple[str, Config]:
    """The config path the image's CMD reads, and the config COPY puts there."""
    (cmd,) = _instruction("CMD")
    path = _option(json.loads(cmd), "--config")
    (source,) = [c.split()[0] for c in _instruction("COPY") if c.split()[-1] == path]
    return source, config_from_dict(yaml.safe_load((REPO / source).read_text()))


def test_the_image_runs_as_a_fixed_non_root_uid_and_gid():
    uid, gid = _dockerfile_user()
    assert uid != 0 and gid != 0
    (run,) = [r for r in _instruction("RUN") if "useradd" in r]
    assert f"--gid {gid} sidecar" in run and f"--uid {uid} --gid {gid}" in run


def test_the_entrypoint_is_the_cli_and_the_default_command_runs_the_baked_config():
    (entrypoint,) = _instruction("ENTRYPOINT")
    (script,) = json.loads(entrypoint)
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[script] == "sidecar.cli:main"
    (cmd,) = _instruction("CMD")
    assert build_parser().parse_args(json.loads(cmd)).command == "run"
    source, config = _baked_config()
    assert source == "docker/sidecar.yaml"  # what docker-compose.yml mounts over it
    assert config.listen.http.rsplit(":", 1)[0] == "0.0.0.0"


def test_the_image_writes_only_to_its_volume_so_a_read_only_root_works():
    _, config = _baked_config()
    volumes = [v for spec in _instruction("VOLUME") for v in json.loads(spec)]
    for path in _written_paths(config):
        (volume,) = [v for v in volumes if _under(path, v)]
        # The directory exists in the image, owned by the user: a fresh volume there is writable.
        assert f"install -d -o sidecar -g sidecar -m 0770 {volume}" in " ".join(_instruction("RUN"))
    assert any("PYTHONDONTWRITEBYTECODE=1" in env for env in _instruction("ENV"))


@pytest.mark.untraced
def test_the_healthcheck_passes_against_the_images_sidecar_and_fails_without_it(pod_dir):
    (healthcheck,) = _instruction("HEALTHCHECK")
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command[0] == "python"  # the image's interpreter; here, the test's
    probe = [sys.executable, *command[1:]]
    source, config = _baked_config()
    text = (REPO / source).read_text()
    for path in _written_paths(config):  # the socket, the window snapshot: into the stand-in volume
        text = text.replace(path, str(pod_dir / posixpath.basename(path)))
    (pod_dir / "sidecar.yaml").write_text(text)
    (cmd,) = _instruction("CMD")
    args = [str(pod_dir / "sidecar.yaml") if a == _option(json.loads(cmd), "--config") else a for a in json.loads(cmd)]
    proc = SidecarProcess(args[1:], env={"PYTHONPATH": str(REPO)})
    try:
        assert subprocess.run(probe, capture_output=True, check=False).returncode == 0
    finally:
        assert proc.stop() == 0
    assert subprocess.run(probe, capture_output=True, check=False).returncode != 0


# -- the README's snippet ----------------------------------------------------------------------------


def _readme_snippet() -> dict[str, Any]:
    section = (REPO / "README.md").read_text().split("### Adding the sidecar to an existing Deployment", 1)[1]
    return yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.DOTALL)[1])


def test_the_readme_snippet_for_an_existing_deployment_is_valid_and_matches_the_manifest():
    snippet = _readme_snippet()
    template = snippet["spec"]["template"]
    labels = template["metadata"]["labels"]
    (your_agent,) = template["spec"]["containers"]
    # Completed into a whole Deployment the way a user's would be: the schema check is the same.
    whole = copy.deepcopy(snippet)
    whole.update(apiVersion="apps/v1", kind="Deployment", metadata={"name": "your-agent"})
    whole["spec"]["selector"] = {"matchLabels": labels}
    whole["spec"]["template"]["spec"]["containers"][0]["image"] = "your-agent"
    assert kubernetes_validate.validate(whole, SCHEMA_VERSION, strict=True) == SCHEMA_VERSION

    (snippet_sidecar,) = template["spec"]["initContainers"]
    for key in ("restartPolicy", "args", "ports", "resources", "volumeMounts"):
        assert snippet_sidecar[key] == SIDECAR[key], key
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert snippet_sidecar[probe]["httpGet"] == SIDECAR[probe]["httpGet"], probe
    # The pod-level settings of deployment.yaml move onto the sidecar's container in the snippet.
    pod = POD["spec"]["securityContext"]
    expected = {**SIDECAR["securityContext"], **{k: pod[k] for k in ("runAsNonRoot", "runAsUser", "runAsGroup", "seccompProfile")}}
    assert snippet_sidecar["securityContext"] == expected
    assert template["spec"]["securityContext"] == {"fsGroup": pod["fsGroup"]}
    assert {v["name"]: v for v in template["spec"]["volumes"]} == VOLUMES
    assert your_agent["env"] == AGENT["env"]
    assert your_agent["volumeMounts"] == AGENT["volumeMounts"]
    assert PODMONITOR["spec"]["selector"]["matchLabels"].items() <= labels.items()
