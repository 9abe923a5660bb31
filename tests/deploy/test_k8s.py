"""infra/k8s: the manifests fit together and fit the images (kubernetes-validate checks the
schemas, in tools/check-images)."""

from __future__ import annotations

from typing import Any

import pytest
from deploy_support import ROOT, SERVICES, package_version, parse_dockerfile

PORTS = {"scheduler": 8081, "coordinator": 8080, "worker": 9090}


def objects(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in manifests if o["kind"] == kind}


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def container(manifests: list[dict[str, Any]], service: str) -> dict[str, Any]:
    deployment = objects(manifests, "Deployment")[f"taskmill-{service}"]
    (only,) = pod_spec(deployment)["containers"]
    result: dict[str, Any] = only
    return result


def env_of(spec: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in spec.get("env", [])}


def test_every_service_and_the_migration_run_their_image_at_the_package_version(
    manifests: list[dict[str, Any]],
) -> None:
    for service in SERVICES:
        spec = container(manifests, service)
        assert spec["image"] == f"taskmill-{service}:{package_version(service)}"
        assert [p["containerPort"] for p in spec["ports"]] == [PORTS[service]]
    (job,) = objects(manifests, "Job").values()
    (migrate,) = pod_spec(job)["containers"]
    assert migrate["command"] == ["taskmill-migrate"]
    assert migrate["image"] == f"taskmill-scheduler:{package_version('scheduler')}"


def test_every_container_has_requests_and_limits(manifests: list[dict[str, Any]]) -> None:
    for workload in [
        *objects(manifests, "Deployment").values(),
        *objects(manifests, "Job").values(),
    ]:
        for spec in pod_spec(workload)["containers"]:
            for bound in ("requests", "limits"):
                assert set(spec["resources"][bound]) >= {"cpu", "memory"}, workload["_file"]


def test_pods_run_as_the_images_non_root_user(manifests: list[dict[str, Any]]) -> None:
    uid = parse_dockerfile(ROOT / "packages" / "worker" / "Dockerfile")[-1].all("USER")[-1].args
    for workload in [
        *objects(manifests, "Deployment").values(),
        *objects(manifests, "Job").values(),
    ]:
        context = pod_spec(workload)["securityContext"]
        assert context["runAsNonRoot"] is True
        assert f"{context['runAsUser']}:{context['runAsGroup']}" == uid
        for spec in pod_spec(workload)["containers"]:
            assert spec["securityContext"]["allowPrivilegeEscalation"] is False


def test_the_scheduler_probes_healthz_and_readyz(manifests: list[dict[str, Any]]) -> None:
    spec = container(manifests, "scheduler")
    assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert spec["ports"][0]["name"] == "http"


@pytest.mark.parametrize("service", ["coordinator", "worker"])
def test_grpc_services_are_probed_with_taskmill_health_on_their_port(
    manifests: list[dict[str, Any]], service: str
) -> None:
    spec = container(manifests, service)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = spec[probe]["exec"]["command"]
        assert command[0] == "taskmill-health" and command[-1] == f"127.0.0.1:{PORTS[service]}"
        # The probe's own deadline must end before the kubelet gives up on it.
        assert float(command[command.index("--timeout") + 1]) < spec[probe]["timeoutSeconds"]


def test_services_select_the_deployments_pods_and_target_their_ports(
    manifests: list[dict[str, Any]],
) -> None:
    services = objects(manifests, "Service")
    assert set(services) == {"taskmill-scheduler", "taskmill-coordinator"}
    deployments = objects(manifests, "Deployment")
    for name, service in services.items():
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        selector = service["spec"]["selector"]
        assert selector.items() <= labels.items(), name
        assert deployments[name]["spec"]["selector"]["matchLabels"] == selector
        port_names = {p["name"] for p in pod_spec(deployments[name])["containers"][0]["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, name


def test_workers_advertise_their_pod_ip_and_reach_the_coordinator_service(
    manifests: list[dict[str, Any]],
) -> None:
    env = env_of(container(manifests, "worker"))
    assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["TASKMILL_WORKER_ADVERTISE_ADDRESS"] == f"$(POD_IP):{env['TASKMILL_WORKER_PORT']}"
    assert env["TASKMILL_WORKER_PORT"] == str(PORTS["worker"])
    # $(POD_IP) expands only if POD_IP is defined earlier in the list.
    names = [e["name"] for e in container(manifests, "worker")["env"]]
    assert names.index("POD_IP") < names.index("TASKMILL_WORKER_ADVERTISE_ADDRESS")
    coordinator = objects(manifests, "Service")["taskmill-coordinator"]
    assert env["TASKMILL_WORKER_COORDINATOR"] == (
        f"taskmill-coordinator:{coordinator['spec']['ports'][0]['port']}"
    )


def test_the_worker_autoscaler_owns_the_worker_replica_count(
    manifests: list[dict[str, Any]],
) -> None:
    (hpa,) = objects(manifests, "HorizontalPodAutoscaler").values()
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "taskmill-worker",
    }
    worker = objects(manifests, "Deployment")["taskmill-worker"]
    assert "replicas" not in worker["spec"]
    # A CPU utilisation target needs a CPU request to measure against.
    assert container(manifests, "worker")["resources"]["requests"]["cpu"]
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]


def test_every_referenced_secret_and_config_key_is_defined(
    manifests: list[dict[str, Any]],
) -> None:
    secrets = objects(manifests, "Secret")
    configs = objects(manifests, "ConfigMap")
    workloads = [*objects(manifests, "Deployment").values(), *objects(manifests, "Job").values()]
    for workload in workloads:
        for spec in pod_spec(workload)["containers"]:
            for source in spec.get("envFrom", []):
                assert source["configMapRef"]["name"] in configs
            for value in env_of(spec).values():
                if not isinstance(value, dict):
                    continue
                if "secretKeyRef" in value:
                    ref = value["secretKeyRef"]
                    assert ref["key"] in secrets[ref["name"]]["stringData"], ref
                if "configMapKeyRef" in value:
                    ref = value["configMapKeyRef"]
                    assert ref["key"] in configs[ref["name"]]["data"], ref


def test_the_secret_is_an_example_outside_the_applied_directory(
    manifests: list[dict[str, Any]],
) -> None:
    (secret,) = objects(manifests, "Secret").values()
    assert secret["_file"].startswith("infra/k8s/examples/")
    data = secret["stringData"]
    assert set(data) == {"database-url", "api-tokens", "cluster-token"}
    assert data["api-tokens"] == data["cluster-token"] == "change-me"
    assert ":change-me@" in data["database-url"]


def test_services_do_not_migrate_and_the_database_comes_from_the_secret(
    manifests: list[dict[str, Any]],
) -> None:
    (config,) = objects(manifests, "ConfigMap").values()
    assert config["data"]["TASKMILL_MIGRATE"] == "false"
    for service in ("scheduler", "coordinator"):
        spec = container(manifests, service)
        assert {"configMapRef": {"name": "taskmill"}} in spec["envFrom"]
        url = env_of(spec)["TASKMILL_DATABASE_URL"]
        assert url == {"secretKeyRef": {"name": "taskmill", "key": "database-url"}}
