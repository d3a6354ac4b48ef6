"""The target picker's listings and the inventory snapshot, read from the API server."""

from __future__ import annotations

import yaml

from captures.adapters import k8s
from captures.analysis.identity import Identity


def test_it_lists_namespaces_pods_services_slices_and_nodes(cluster):
    assert [ns["name"] for ns in cluster.namespaces()] == [
        "default", "istio-system", "kube-system", "kviz"]
    pods = {p["name"]: p for p in cluster.pods("default")}
    assert sorted(pods) == ["nginx-a", "nginx-b", "ubuntu"]
    assert pods["ubuntu"]["ips"] == ["10.244.10.89"]
    assert pods["ubuntu"]["node"] == "kviz-node"
    assert pods["ubuntu"]["owner"] == {"kind": "ReplicaSet", "name": "ubuntu-7d4b9"}
    assert pods["ubuntu"]["containers"] == ["ubuntu"]
    services = {s["name"]: s for s in cluster.services()}
    assert services["nginx"]["cluster_ips"] == ["10.0.185.118"]
    assert services["kube-dns"]["ports"][0] == {"name": "dns", "port": 53, "target_port": 53,
                                                "protocol": "UDP"}
    slices = {s["service"]: s for s in cluster.endpoint_slices("default")}
    assert slices["nginx"]["addresses"] == ["10.244.10.90", "10.244.10.91"]
    assert slices["nginx"]["pods"] == ["nginx-a", "nginx-b"]
    [node] = cluster.nodes()
    assert node["name"] == "kviz-node" and node["addresses"] == ["192.168.77.2"]


def test_the_picker_lists_pods_and_services_per_namespace(cluster):
    listing = {entry["namespace"]: entry for entry in cluster.targets(["default"])}
    assert list(listing) == ["default"]
    assert [p["name"] for p in listing["default"]["pods"]] == ["ubuntu", "nginx-a", "nginx-b"]
    assert [s["name"] for s in listing["default"]["services"]] == ["nginx"]


def test_a_services_pods_come_from_its_endpointslices(cluster):
    assert [p["name"] for p in cluster.service_pods("default", "nginx")] == ["nginx-a", "nginx-b"]
    assert [p["name"] for p in cluster.service_pods("kube-system", "kube-dns")] == ["coredns"]


def test_the_inventory_snapshot_names_ips_as_docs_inventory_says(cluster):
    inventory = cluster.inventory()
    assert inventory["schema"] == "kviz.inventory/1"
    assert inventory["cluster"] == "fake"
    assert {"namespace": "default", "service": "nginx", "addresses": ["10.244.10.90",
            "10.244.10.91"], "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]} in (
        inventory["endpoints"])
    assert inventory["nodes"] == [{"name": "kviz-node", "addresses": ["192.168.77.2"],
                                   "pod_cidr": "10.244.10.0/24"}]
    # The analysis names a Service's VIP even in a capture taken at a pod.
    identity = Identity(inventory)
    assert identity.describe("10.0.185.118")["kind"] == "service"
    assert identity.describe("10.0.185.118")["name"] == "nginx"
    assert identity.describe("10.244.10.89")["name"] == "ubuntu"


def test_it_loads_the_chosen_context(kubeconfig):
    contexts = yaml.safe_load(kubeconfig.read_text())["contexts"]
    assert [context["name"] for context in contexts] == ["fake", "other"]
    other = k8s.Cluster.connect(str(kubeconfig), "other")
    try:
        assert other.name == "other"
        assert other.namespaces()
    finally:
        other.close()


def test_an_unreachable_api_server_is_named(tmp_path, apiserver):
    path = apiserver.kubeconfig(tmp_path / "kc")
    path.write_text(path.read_text().replace(apiserver.url, "http://127.0.0.1:9"))
    cluster = k8s.Cluster.connect(str(path))
    try:
        k8s.REQUEST_TIMEOUT = 5
        cluster.api_client.configuration.retries = 0
        try:
            cluster.namespaces()
        except k8s.K8sError as exc:
            assert "cannot reach the Kubernetes API at http://127.0.0.1:9" in str(exc)
        else:
            raise AssertionError("no error")
    finally:
        k8s.REQUEST_TIMEOUT = 30
        cluster.close()
