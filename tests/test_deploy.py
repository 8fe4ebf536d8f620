"""Deployment files: every configuration sample loads, Kubernetes, compose, systemd, Docker.

No container engine or cluster runs here, so this checks what can be checked offline: every
exporter configuration the project ships goes through the exporter's own loader; Kubernetes
objects validate against the API schemas (kubernetes-validate), custom resources by their
structure; every file a kustomization or compose file references exists; Prometheus and
Alertmanager configs pass promtool / amtool laid out as the containers see them.
"""

from __future__ import annotations

import os
import re
import shutil
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from exporter.config import load_settings
from exporter.docs import markdown_files
from exporter.errors import ConfigError
from tests.test_rules import (
    ALERTS,
    RECORDING,
    ROOT,
    SCRAPE_CONFIG,
    load_yaml,
    require_promtool,
    run,
)

DEPLOY = ROOT / "deploy"
K8S_DIR = DEPLOY / "kubernetes"
SECURE_DIR = K8S_DIR / "secure"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
COMPOSE_SECURE = COMPOSE_DIR / "compose.secure.yaml"
SYSTEMD_UNIT = DEPLOY / "systemd" / "emqx-client-exporter.service"
DOCKERFILE = DEPLOY / "Dockerfile"
GRAFANA_DIR = ROOT / "grafana"
#: The Kubernetes version the manifests are validated against.
K8S_VERSION = "1.30.0"
#: What the deployments put in the environment (compose sets EMQX_URL; docs fragments lack it).
DEPLOY_ENV = {"EMQX_API_KEY": "key", "EMQX_API_SECRET": "secret",
              "EMQX_URL": "http://emqx:18083"}


def k8s_documents(directory: Path) -> list[dict[str, Any]]:
    docs = []
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                doc["__file__"] = path.name
                docs.append(doc)
    return docs


def k8s_object(directory: Path, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in k8s_documents(directory)
             if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]



# --------------------------------------------------------------------------------------------
# every exporter configuration sample


@dataclass(frozen=True)
class Sample:
    where: str
    text: str


def yaml_blocks(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of every ```yaml block of a Markdown file."""
    text = path.read_text(encoding="utf-8")
    for m in re.finditer(r"^```ya?ml\n(.*?)^```", text, re.S | re.M):
        yield text.count("\n", 0, m.start()) + 1, m.group(1)


#: Top-level keys that make a YAML block something other than an exporter config.
OTHER_FORMATS = {
    "scrape_configs": "Prometheus config",
    "groups": "Prometheus rules",
    "providers": "Grafana provisioning",
    "datasources": "Grafana provisioning",
    "route": "Alertmanager config",
    "tls_server_config": "exporter-toolkit web config",
    "basic_auth_users": "exporter-toolkit web config",
}


def exporter_config_samples() -> list[Sample]:
    samples = [Sample(f"{doc['__file__']} config.yaml", doc["data"]["config.yaml"])
               for doc in k8s_documents(K8S_DIR) if doc["kind"] == "ConfigMap"]
    samples += [Sample(str(path.relative_to(ROOT)), path.read_text(encoding="utf-8"))
                for path in (COMPOSE_DIR / "exporter.yml",
                             DEPLOY / "systemd" / "config.example.yaml")]
    for md in (*markdown_files(ROOT), GRAFANA_DIR / "README.md", DEPLOY / "README.md"):
        for line, text in yaml_blocks(md):
            data = yaml.safe_load(text)
            assert isinstance(data, dict), f"{md.name}:{line}: not a mapping"
            if not set(data) & set(OTHER_FORMATS):
                samples.append(Sample(f"{md.relative_to(ROOT)}:{line}", text))
    return samples


def with_placeholder_files(data: Any, tmp: Path) -> Any:
    """Point every `*_file` key (certificates, secrets) at an existing file, except the state
    file the exporter writes itself."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            if key.endswith("_file") and key != "state_file" and isinstance(value, str):
                placeholder = tmp / f"{len(list(tmp.iterdir()))}-{key}"
                placeholder.write_text("placeholder\n")
                out[key] = str(placeholder)
            else:
                out[key] = with_placeholder_files(value, tmp)
        return out
    if isinstance(data, list):
        return [with_placeholder_files(v, tmp) for v in data]
    return data


def test_samples_are_found() -> None:
    wheres = [s.where for s in exporter_config_samples()]
    assert any(w.startswith("configmap.yaml") for w in wheres)
    # the configuration samples live in docs/ (configuration, cardinality, events)
    assert sum(w.startswith(("README.md:", "docs/")) for w in wheres) >= 4, wheres


@pytest.mark.parametrize("sample", exporter_config_samples(), ids=lambda s: s.where)
def test_every_config_sample_loads(sample: Sample, tmp_path: Path) -> None:
    """The exporter's own loader accepts every configuration the project ships."""
    files = tmp_path / "files"
    files.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(with_placeholder_files(yaml.safe_load(sample.text), files)))
    settings = load_settings({}, DEPLOY_ENV, str(config))
    assert settings.clusters


def test_the_loader_rejects_the_old_wrong_key(tmp_path: Path) -> None:
    """What the shipped ConfigMap once said: the test above must catch such a sample."""
    config = tmp_path / "config.yaml"
    config.write_text("aggregate_labels: [node, class]\n")
    with pytest.raises(ConfigError, match="aggregate_labels"):
        load_settings({}, DEPLOY_ENV, str(config))


def test_state_file_of_every_sample_is_writable_where_it_runs() -> None:
    """systemd: state_file lies in the unit's StateDirectory; Kubernetes: on a volume."""
    unit = unit_settings()
    (state_dir,) = unit["StateDirectory"]
    assert "ProtectSystem" in unit
    systemd_config = yaml.safe_load((DEPLOY / "systemd" / "config.example.yaml").read_text())
    assert Path(systemd_config["per_client"]["state_file"]).parent == Path("/var/lib", state_dir)
    docs = [yaml.safe_load(t) for md in markdown_files(ROOT) for _, t in yaml_blocks(md)]
    doc_states = [d["per_client"]["state_file"] for d in docs
                     if isinstance(d.get("per_client"), dict) and "state_file" in d["per_client"]]
    assert doc_states, "neither README nor docs/ show a state_file"
    for path in doc_states:
        assert Path(path).parent == Path("/var/lib", state_dir), path

    sts = k8s_object(K8S_DIR, "StatefulSet")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    config = yaml.safe_load(k8s_object(K8S_DIR, "ConfigMap")["data"]["config.yaml"])
    state = Path(config["per_client"]["state_file"])
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    mount = mounts[str(state.parent)]
    assert not mount.get("readOnly"), "the state volume must be writable"
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[mount["name"]]


# --------------------------------------------------------------------------------------------
# Kubernetes


def kustomization(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(directory / "kustomization.yaml")
    return data


def kustomize_files(directory: Path) -> list[Path]:
    """Every path a kustomization references, resolved."""
    k = kustomization(directory)
    paths = [directory / r for r in k.get("resources", [])]
    paths += [directory / p["path"] for p in k.get("patches", []) if "path" in p]
    return paths


def built_objects(directory: Path) -> list[dict[str, Any]]:
    """The objects a kustomization lists (resources only, recursively; no patching)."""
    objects = []
    for path in kustomize_files(directory)[: len(kustomization(directory).get("resources", []))]:
        if path.is_dir():
            objects += built_objects(path)
        else:
            objects += [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return objects


@pytest.mark.parametrize("directory", [K8S_DIR, SECURE_DIR], ids=lambda p: p.name)
def test_kustomization_references_exist_and_never_own_a_secret(directory: Path) -> None:
    for path in kustomize_files(directory):
        assert path.exists(), f"{directory.name}/kustomization.yaml: {path} does not exist"
        if path.is_dir():
            assert (path / "kustomization.yaml").exists(), path
    kinds = [o["kind"] for o in built_objects(directory)]
    assert "Secret" not in kinds, "apply -k would overwrite the user's Secret"
    assert not kustomization(directory).get("secretGenerator"), "no generated secrets either"
    assert {"StatefulSet", "ConfigMap", "ServiceMonitor", "PrometheusRule"} <= set(kinds)


def test_every_yaml_file_is_referenced_or_an_example() -> None:
    for directory in (K8S_DIR, SECURE_DIR):
        listed = {p.resolve() for p in kustomize_files(directory)}
        for path in directory.glob("*.yaml"):
            if path.name == "kustomization.yaml":
                continue
            assert path.resolve() in listed or path.name.endswith(".example.yaml"), path


def core_objects() -> list[dict[str, Any]]:
    docs = k8s_documents(K8S_DIR) + k8s_documents(SECURE_DIR)
    patches = {p["path"] for p in kustomization(SECURE_DIR)["patches"]}
    custom = {"Kustomization", "ServiceMonitor", "PrometheusRule"}
    return [d for d in docs if d["kind"] not in custom and d["__file__"] not in patches]


@pytest.mark.parametrize("doc", core_objects(), ids=lambda d: f"{d['__file__']}:{d['kind']}")
def test_kubernetes_objects_validate_against_the_api_schema(doc: dict[str, Any]) -> None:
    obj = {k: v for k, v in doc.items() if k != "__file__"}
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{doc['__file__']}: {exc.message} at {list(exc.path)}")


def test_schema_validation_catches_a_broken_object() -> None:
    sts = {k: v for k, v in k8s_object(K8S_DIR, "StatefulSet").items() if k != "__file__"}
    sts["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, K8S_VERSION, strict=True)


def test_statefulset_shards_and_hardening() -> None:
    sts = k8s_object(K8S_DIR, "StatefulSet")
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    argv = container.get("command", []) + container["args"]
    assert argv[:2] == ["emqx-client-exporter", "run"]
    assert argv[argv.index("--config") + 1] == "/etc/emqx-client-exporter/config.yaml"
    assert argv[argv.index("--shard") + 1] == f"$(POD_INDEX)/{spec['replicas']}"
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']")
    secret = k8s_object(K8S_DIR, "Secret")  # the example the user copies
    assert secret["__file__"] == "secret.example.yaml"
    key_ref = env["EMQX_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert key_ref["name"] == secret["metadata"]["name"]
    secret_file = Path(env["EMQX_API_SECRET_FILE"]["value"])
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    secret_volume = volumes[mounts[str(secret_file.parent)]["name"]]["secret"]
    assert secret_volume["secretName"] == secret["metadata"]["name"]
    assert secret_file.name in {i["path"] for i in secret_volume["items"]}
    keys = {i["key"] for i in secret_volume["items"]} | {key_ref["key"]}
    assert keys <= set(secret["stringData"])
    config_volume = volumes[mounts["/etc/emqx-client-exporter"]["name"]]["configMap"]
    assert "config.yaml" in k8s_object(K8S_DIR, "ConfigMap", config_volume["name"])["data"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    csc = container["securityContext"]
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"]["drop"] == ["ALL"]


def test_servicemonitor_structure_and_selection() -> None:
    monitor = k8s_object(K8S_DIR, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    assert isinstance(spec["sampleLimit"], int) and spec["sampleLimit"] > 20000
    (endpoint,) = spec["endpoints"]
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "honorLabels",
                             "relabelings", "metricRelabelings", "scheme", "tlsConfig",
                             "basicAuth"}
    assert re.fullmatch(r"\d+[smh]", endpoint["interval"])
    services = [d for d in k8s_documents(K8S_DIR) if d["kind"] == "Service"]
    selector = spec["selector"]["matchLabels"]
    selected = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
    assert len(selected) == 1, "the ServiceMonitor must select exactly one Service"
    assert endpoint["port"] in {p["name"] for p in selected[0]["spec"]["ports"]}
    # the job label is the Service name: the rules' selector must match it
    assert f'job="{selected[0]["metadata"]["name"]}"' in ALERTS.read_text()


def test_prometheusrule_structure() -> None:
    rule = k8s_object(K8S_DIR, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    groups = rule["spec"]["groups"]
    assert groups == load_yaml(RECORDING)["groups"] + load_yaml(ALERTS)["groups"]
    for group in groups:
        assert set(group) <= {"name", "interval", "rules"}
        for r in group["rules"]:
            assert ("alert" in r) != ("record" in r)
            assert set(r) <= {"alert", "record", "expr", "for", "keep_firing_for", "labels",
                              "annotations"}


def test_secure_overlay_scrapes_https_with_basic_auth() -> None:
    patch = k8s_object(SECURE_DIR, "ServiceMonitor")
    (endpoint,) = patch["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    web_secret = k8s_object(SECURE_DIR, "Secret")
    name = web_secret["metadata"]["name"]
    for ref in (endpoint["basicAuth"]["username"], endpoint["basicAuth"]["password"],
                endpoint["tlsConfig"]["ca"]["secret"]):
        assert ref["name"] == name and ref["key"] in web_secret["stringData"], ref
    sts = k8s_object(SECURE_DIR, "StatefulSet")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    web_config = Path(container["args"][container["args"].index("--web-config") + 1])
    base = k8s_object(K8S_DIR, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][: len(base["args"])] == base["args"], "the patch drops base args"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    items = volumes[mounts[str(web_config.parent)]]["secret"]["items"]
    assert web_config.name in {i["path"] for i in items}
    assert {i["key"] for i in items} <= set(web_secret["stringData"])
    check_web_config(yaml.safe_load(web_secret["stringData"]["web-config.yml"]), web_config.parent)


def check_web_config(config: dict[str, Any], mounted_at: Path) -> None:
    """The exporter-toolkit web-config format: TLS files where they are mounted, bcrypt users."""
    assert set(config) <= {"tls_server_config", "basic_auth_users", "http_server_config"}
    tls = config["tls_server_config"]
    for key in ("cert_file", "key_file"):
        assert Path(tls[key]).parent == mounted_at, (key, tls[key])
    for user, hashed in config["basic_auth_users"].items():
        assert re.fullmatch(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}", hashed), user


# --------------------------------------------------------------------------------------------
# docker compose


def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE)
    return data


def host_volumes(service: dict[str, Any]) -> list[tuple[Path, str]]:
    """(host path, container path) of the bind mounts of a compose service."""
    out = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            out.append(((COMPOSE_DIR / source).resolve(), target))
    return out


def test_compose_references_exist() -> None:
    data = compose()
    for name, service in data["services"].items():
        build = service.get("build")
        if build:
            context = (COMPOSE_DIR / build["context"]).resolve()
            assert (context / build["dockerfile"]).exists(), name
        for host, _ in host_volumes(service):
            assert host.exists(), f"{name}: {host} does not exist"
    for secret in data.get("secrets", {}).values():
        assert (COMPOSE_DIR / secret["file"]).exists()
    override = load_yaml(COMPOSE_SECURE)
    for name, service in override["services"].items():
        assert name in data["services"]
        for host, _ in host_volumes(service):
            assert host.exists(), f"{name}: {host} does not exist"


def test_compose_demo_profile_runs_the_simulator_as_emqx() -> None:
    services = compose()["services"]
    simulator = services["simulator"]
    assert simulator["profiles"] == ["demo"]
    assert simulator["command"][0] == "simulate"
    assert "emqx" in simulator["networks"]["default"]["aliases"]
    exporter = services["exporter"]
    assert "profiles" not in exporter
    assert exporter["environment"]["EMQX_URL"].endswith("http://emqx:18083}")
    port = simulator["command"][simulator["command"].index("--listen") + 1].rsplit(":", 1)[1]
    assert port == "18083"
    key = simulator["command"][simulator["command"].index("--api-key") + 1]
    assert exporter["environment"]["EMQX_API_KEY"] == f"${{EMQX_API_KEY:-{key}}}"
    secret = simulator["command"][simulator["command"].index("--api-secret") + 1]
    assert (COMPOSE_DIR / "api-secret").read_text().strip() == secret
    others = {n for n, s in services.items() if "profiles" not in s}
    assert {"exporter", "prometheus", "alertmanager", "grafana"} <= others


def container_layout(service: dict[str, Any], root: Path,
                     extra: list[tuple[Path, str]] = ()) -> None:  # type: ignore[assignment]
    """Lay the service's bind mounts out under ``root`` as the container sees them (later
    mounts shadow earlier ones, as in compose)."""
    for host, target in [*host_volumes(service), *extra]:
        dest = root / target.lstrip("/")
        if dest.is_symlink() or dest.exists():
            dest.unlink() if dest.is_symlink() or dest.is_file() else shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if host.is_dir():
            shutil.copytree(host, dest)
        else:
            shutil.copy(host, dest)


@pytest.mark.promtool
@pytest.mark.parametrize("secure", [False, True], ids=["plain", "secure"])
def test_compose_prometheus_config_passes_promtool(secure: bool, tmp_path: Path) -> None:
    promtool = require_promtool()
    prometheus = compose()["services"]["prometheus"]
    container_layout(prometheus, tmp_path)
    if secure:
        container_layout(load_yaml(COMPOSE_SECURE)["services"]["prometheus"], tmp_path)
        # the user supplies the CA (compose.secure.yaml says so)
        (tmp_path / "etc/prometheus/secure/ca.crt").write_text("placeholder\n")
    config_flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config = tmp_path / config_flag.split("=", 1)[1].lstrip("/")
    result = run(promtool, "check", "config", config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rules files found" in result.stdout + result.stderr or "SUCCESS: 2 rule files" in (
        result.stdout + result.stderr), result.stdout + result.stderr
    data = load_yaml(config)
    (job,) = data["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["exporter:9877"]
    assert job["sample_limit"] > 0
    am = data["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am == ["alertmanager:9093"]
    assert (job.get("scheme") == "https") is secure


def test_compose_secure_variant_mounts_a_web_config() -> None:
    exporter = load_yaml(COMPOSE_SECURE)["services"]["exporter"]
    command = exporter["command"]
    web_config = Path(command[command.index("--web-config") + 1])
    mounts = {target: host for host, target in host_volumes(exporter)}
    host_dir = mounts[str(web_config.parent)]
    check_web_config(load_yaml(host_dir / web_config.name), web_config.parent)


@pytest.mark.promtool
def test_compose_alertmanager_config_passes_amtool(tmp_path: Path) -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        if os.environ.get("CI", "").lower() in {"true", "1"}:
            pytest.fail("amtool is required in CI: install prometheus-alertmanager")
        pytest.skip("amtool not found: install the Debian package prometheus-alertmanager")
    service = compose()["services"]["alertmanager"]
    container_layout(service, tmp_path)
    flag = next(a for a in service["command"] if a.startswith("--config.file="))
    result = run(amtool, "check-config", tmp_path / flag.split("=", 1)[1].lstrip("/"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning_points_at_the_shipped_dashboards(tmp_path: Path) -> None:
    grafana = compose()["services"]["grafana"]
    container_layout(grafana, tmp_path)
    providers = list((tmp_path / "etc/grafana/provisioning/dashboards").glob("*.yml"))
    assert providers
    for provider_file in providers:
        for provider in load_yaml(provider_file)["providers"]:
            path = tmp_path / provider["options"]["path"].lstrip("/")
            shipped = sorted(p.name for p in GRAFANA_DIR.glob("*.json"))
            assert sorted(p.name for p in path.glob("*.json")) == shipped
    (datasources,) = (tmp_path / "etc/grafana/provisioning/datasources").glob("*.yml")
    prometheus = [d for d in load_yaml(datasources)["datasources"] if d["type"] == "prometheus"]
    assert prometheus and prometheus[0]["url"] == "http://prometheus:9090"
    assert prometheus[0]["isDefault"] is True


# --------------------------------------------------------------------------------------------
# Prometheus example, systemd, Docker


def test_prometheus_scrape_config() -> None:
    config = load_yaml(SCRAPE_CONFIG)
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "emqx-client-exporter"]
    assert job["scrape_interval"] == "30s"
    assert job["sample_limit"] > 0
    assert job["honor_labels"] is True
    rule_files = {(SCRAPE_CONFIG.parent / f).resolve() for f in config["rule_files"]}
    assert rule_files == {ALERTS.resolve(), RECORDING.resolve()}


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in SYSTEMD_UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_unit() -> None:
    settings = unit_settings()
    assert settings["DynamicUser"] == ["yes"]
    assert settings["EnvironmentFile"]
    assert "run --config" in settings["ExecStart"][0]
    assert settings["ProtectSystem"] == ["strict"]
    for option in ("ProtectHome", "NoNewPrivileges", "PrivateTmp", "StateDirectory"):
        assert option in settings, option


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Instructions (keyword, rest with continuations joined) per stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        word, _, rest = line.strip().partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        stages[-1].append((word.upper(), rest.strip()))
    return stages


def test_dockerfile_is_multi_stage_locked_and_non_root() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    builder, final = stages[0], stages[-1]
    assert builder[0][1].endswith(" AS builder")
    runs = " ".join(rest for word, rest in builder if word == "RUN")
    assert "--require-hashes" in runs
    final_runs = " ".join(rest for word, rest in final if word == "RUN")
    for tool in ("apt-get", "gcc", "build-essential", "pip install"):
        assert tool not in final_runs, f"the final image runs {tool}"
    assert any(word == "COPY" and rest.startswith("--from=builder") for word, rest in final)
    assert not any(word == "COPY" and "exporter" in rest.split() for word, rest in final)
    (user,) = [rest for word, rest in final if word == "USER"]
    assert not user.startswith(("root", "0")), user
    assert dict(final)["EXPOSE"] == "9877"
    copied = [rest.split()[:-1] for word, rest in builder if word == "COPY"]
    for sources in copied:
        for source in sources:
            assert (ROOT / source).exists(), source


def test_image_leaves_out_the_simulator_unless_built_for_the_demo() -> None:
    builder = dockerfile_stages()[0]
    assert ("ARG", "WITH_SIMULATOR=false") in builder
    python = re.match(r"python:(\d+\.\d+)-", builder[0][1]).group(1)  # type: ignore[union-attr]
    runs = " ".join(" ".join(rest.split()) for word, rest in builder if word == "RUN")
    assert (f'if [ "$WITH_SIMULATOR" != true ]; then rm -r '
            f"/opt/venv/lib/python{python}/site-packages/emqx_simulator; fi") in runs
    assert "!emqx_simulator/" in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    services = compose()["services"]
    assert services["simulator"]["build"]["args"] == {"WITH_SIMULATOR": "true"}
    assert "args" not in services["exporter"]["build"]
    # Two builds of one file, two images: the exporter's must not be the demo's.
    assert services["simulator"]["image"] != services["exporter"]["image"]


def lock_packages(path: Path) -> dict[str, str]:
    """name -> version of a hashed lock file; every requirement must carry a hash."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    packages = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = re.match(r"([A-Za-z0-9_.-]+)==(\S+)\s+(.*)", line)
        assert m, f"{path.name}: not pinned: {line}"
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", m.group(3)), f"no hash: {line}"
        packages[m.group(1).lower().replace("_", "-")] = m.group(2)
    return packages


def test_lock_files_pin_every_runtime_dependency_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    locked = lock_packages(DEPLOY / "requirements.lock")
    # The image decodes pages with Arrow too (the `fast` extra, `exporter.columnar`).
    for requirement in [*project["dependencies"], *project["optional-dependencies"]["fast"]]:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)  # type: ignore[union-attr]
        assert name.lower().replace("_", "-") in locked, f"{name} is not in the lock"
    build = lock_packages(DEPLOY / "build-requirements.lock")
    assert "setuptools" in build
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for lock in ("deploy/requirements.lock", "deploy/build-requirements.lock"):
        assert f"!{lock}" in ignore, f"{lock} is not sent to the build"
