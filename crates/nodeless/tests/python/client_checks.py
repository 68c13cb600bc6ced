"""The official Kubernetes Python client against a running nodeless.

Usage: python3 client_checks.py KUBECONFIG
Exits non-zero on the first failed check; prints one line per check.
"""
import sys
import threading
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


def check(name, fn):
    fn()
    print(f"ok {name}", flush=True)


def main(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()
    apps = client.AppsV1Api()

    def namespaces():
        names = [n.metadata.name for n in core.list_namespace().items]
        assert "default" in names and "kube-system" in names, names

    def configmap_crud():
        body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-cm", labels={"from": "python"}), data={"a": "1"})
        created = core.create_namespaced_config_map("default", body)
        assert created.metadata.uid
        got = core.read_namespaced_config_map("py-cm", "default")
        assert got.data == {"a": "1"}, got.data
        core.patch_namespaced_config_map("py-cm", "default", {"data": {"b": "2"}})
        got = core.read_namespaced_config_map("py-cm", "default")
        assert got.data == {"a": "1", "b": "2"}, got.data
        listed = core.list_namespaced_config_map("default", label_selector="from=python")
        assert [c.metadata.name for c in listed.items] == ["py-cm"]
        core.delete_namespaced_config_map("py-cm", "default")
        try:
            core.read_namespaced_config_map("py-cm", "default")
            raise AssertionError("still there")
        except ApiException as e:
            assert e.status == 404, e.status

    def deployment_and_scale():
        dep = client.V1Deployment(
            metadata=client.V1ObjectMeta(name="py-web"),
            spec=client.V1DeploymentSpec(
                replicas=1,
                selector=client.V1LabelSelector(match_labels={"app": "py-web"}),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels={"app": "py-web"}),
                    spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="nginx:1.25")]),
                ),
            ),
        )
        created = apps.create_namespaced_deployment("default", dep)
        assert created.spec.strategy.type == "RollingUpdate"
        apps.patch_namespaced_deployment_scale("py-web", "default", {"spec": {"replicas": 3}})
        scale = apps.read_namespaced_deployment_scale("py-web", "default")
        assert scale.spec.replicas == 3, scale

    def invalid_is_422():
        try:
            core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="Bad_Name")))
            raise AssertionError("accepted an invalid name")
        except ApiException as e:
            assert e.status == 422, e.status

    def watch_events():
        seen = []
        w = watch.Watch()

        def produce():
            time.sleep(0.5)
            core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-watched")))

        threading.Thread(target=produce).start()
        for event in w.stream(core.list_namespaced_config_map, "default", timeout_seconds=10):
            seen.append((event["type"], event["object"].metadata.name))
            if ("ADDED", "py-watched") in seen:
                w.stop()
        assert ("ADDED", "py-watched") in seen, seen

    checks = [namespaces, configmap_crud, deployment_and_scale, invalid_is_422, watch_events]
    for c in checks:
        check(c.__name__, c)
    print(f"{len(checks)} passed, 0 failed")


if __name__ == "__main__":
    main(sys.argv[1])
