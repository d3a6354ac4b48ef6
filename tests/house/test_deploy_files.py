"""The deploy files, read as Docker, compose and Kubernetes read them: each test fails on one
defect found when they were run (docs/deploy.md): a shell as PID 1 that `docker compose stop`
ends with SIGKILL, a worker that starts before the migrations, a secret key made up per
container, an image that carries 170 MB of node_modules, a root user, no probes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KVIZ_IMAGE = "kviz:latest"
SHELLS = {"sh", "bash", "/bin/sh", "/bin/bash", "/usr/bin/env"}


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def services() -> dict:
    return compose()["services"]


def kviz_services() -> dict:
    return {name: spec for name, spec in services().items() if spec.get("image") == KVIZ_IMAGE}


def with_defaults(text: str) -> str:
    """`${NAME:-default}` as compose reads it when NAME is not set."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


# -- compose ----------------------------------------------------------------------------------


def test_web_migrate_and_worker_share_one_image_built_once():
    kviz = kviz_services()
    assert {"web", "worker", "migrate"} <= kviz.keys()
    built = [name for name, spec in kviz.items() if "build" in spec]
    # compose builds it before the first service that needs it: the one all others wait for.
    assert built == ["migrate"], built
    assert all(spec.get("build") in (None, ".") for spec in kviz.values())


@pytest.mark.parametrize("name", ["web", "worker", "analysis-worker", "migrate"])
def test_kviz_processes_are_pid_1_without_a_shell(name):
    command = services()[name]["command"]
    # A string goes through no shell in compose either, but `sh -c "a && b"` makes sh PID 1,
    # which ignores SIGTERM: `docker compose stop` waited 10 s and then killed.
    assert isinstance(command, list), command
    assert command[0] not in SHELLS and "&&" not in command, command


def test_web_runs_daphne_and_leaves_migrations_to_the_migrate_service():
    web, migrate = services()["web"]["command"], services()["migrate"]["command"]
    assert web[:3] == ["python", "-m", "kviz.serve"]
    assert "migrate" not in web
    assert migrate == ["python", "manage.py", "migrate", "--noinput"]
    assert services()["migrate"].get("restart", "no") == "no"  # one-shot: never rerun


@pytest.mark.parametrize("name", ["web", "worker", "analysis-worker"])
def test_web_and_worker_wait_for_the_migrations(name):
    depends = services()[name]["depends_on"]
    assert depends["migrate"] == {"condition": "service_completed_successfully"}
    assert depends["postgres"] == {"condition": "service_healthy"}
    assert depends["redis"] == {"condition": "service_healthy"}


def test_the_secret_key_is_required_never_defaulted():
    for name in ("web", "worker", "analysis-worker", "migrate"):
        key = services()[name]["environment"]["SECRET_KEY"]
        assert re.fullmatch(r"\$\{SECRET_KEY:\?[^}]+\}", key), (name, key)


def test_published_ports_bind_to_loopback_by_default():
    published = [(name, port) for name, spec in services().items()
                 for port in spec.get("ports", [])]
    assert published  # the proxy
    for name, port in published:
        if isinstance(port, dict):
            assert port.get("host_ip") == "127.0.0.1", (name, port)
            continue
        parts = with_defaults(str(port)).split(":")
        assert len(parts) == 3 and parts[0] == "127.0.0.1", (name, port)
    assert "ports" not in services()["web"]  # daphne only behind the proxy


def test_services_have_healthchecks_and_restart_policies():
    every = services()
    web_check = " ".join(every["web"]["healthcheck"]["test"])
    assert "/healthz" in web_check and "curl" not in web_check  # the image has no curl
    assert every["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "pg_isready" in " ".join(every["postgres"]["healthcheck"]["test"])
    for name, spec in every.items():
        if name != "migrate":
            assert spec.get("restart") == "unless-stopped", name
    assert every["proxy"]["depends_on"]["web"] == {"condition": "service_healthy"}


def test_only_the_worker_may_capture():
    every = services()
    assert every["worker"]["cap_drop"] == ["ALL"] and every["worker"]["cap_add"] == ["NET_RAW"]
    for name in ("web", "migrate", "analysis-worker"):
        assert every[name]["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in every[name]["security_opt"], name
    assert [name for name, spec in every.items() if spec.get("cap_add")] == ["worker"]
    assert not any(spec.get("privileged") for spec in every.values())


def option(command: list[str], name: str) -> str:
    """The value of `--name=value` or `-n value` in a command."""
    for index, word in enumerate(command):
        if word.startswith(f"{name}="):
            return word.split("=", 1)[1]
        if word == name:
            return command[index + 1]
    raise AssertionError(f"no {name} in {command}")


def assert_capture_and_analysis_workers(capture: list[str], analysis: list[str]) -> None:
    # Captures wait on I/O: many at once in one process's threads. Analyses are CPU work on a
    # queue of their own, so an upload never waits behind a live capture.
    assert option(capture, "--pool") == "threads", capture
    assert int(with_defaults(option(capture, "--concurrency"))) >= 4, capture
    assert option(capture, "-Q") == "kviz", capture
    assert option(analysis, "--pool") == "prefork", analysis
    assert int(with_defaults(option(analysis, "--concurrency"))) >= 2, analysis
    assert option(analysis, "-Q") == "kviz-analysis", analysis
    # A worker that starts reaps the captures under its own node name: never the same one.
    assert option(capture, "-n").split("@")[0] != option(analysis, "-n").split("@")[0]


def test_captures_run_in_threads_and_analyses_in_a_worker_of_their_own():
    every = services()
    assert_capture_and_analysis_workers(every["worker"]["command"],
                                        every["analysis-worker"]["command"])
    assert every["analysis-worker"]["volumes"] == every["worker"]["volumes"]


def test_the_deploy_files_name_the_queues_the_settings_default_to():
    # The workers' -Q are written out; the web and the workers must queue to the same names.
    assert not {"KVIZ_QUEUE", "KVIZ_ANALYSIS_QUEUE"} & compose()["x-kviz-env"].keys()
    assert not {"KVIZ_QUEUE", "KVIZ_ANALYSIS_QUEUE"} & k8s("ConfigMap", "kviz")["data"].keys()
    text = (ROOT / "kviz/settings.py").read_text()
    assert 'env("KVIZ_QUEUE", "kviz")' in text
    assert 'env("KVIZ_ANALYSIS_QUEUE", f"{CELERY_TASK_DEFAULT_QUEUE}-analysis")' in text


# -- the image --------------------------------------------------------------------------------


def test_the_image_runs_as_a_user_that_is_not_root():
    users = [rest for keyword, rest in dockerfile_instructions() if keyword == "USER"]
    assert users, "no USER in the Dockerfile: everything runs as root"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_only_dumpcap_gets_a_capability_and_only_net_raw():
    runs = " ".join(rest for keyword, rest in dockerfile_instructions() if keyword == "RUN")
    assert re.findall(r"setcap\s+(\S+)\s+(\S+)", runs) == [("cap_net_raw=eip", "/usr/bin/dumpcap")]
    assert "install-setuid boolean false" in runs


def test_static_files_are_collected_into_the_image_not_the_data_volume():
    instructions = dockerfile_instructions()
    env = " ".join(rest for keyword, rest in instructions if keyword == "ENV")
    assert "KVIZ_STATIC_ROOT=/app/static" in env and "KVIZ_DATA_DIR=/data" in env
    assert "KVIZ_STATIC_FINDERS=false" in env and "KVIZ_REQUIRE_SECRET_KEY=true" in env
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert "collectstatic" in runs


def test_the_default_command_is_exec_form():
    [cmd] = [rest for keyword, rest in dockerfile_instructions() if keyword == "CMD"]
    assert cmd.startswith('["python", "-m", "kviz.serve"'), cmd


def test_settings_keep_static_files_outside_the_data_directory():
    from django.conf import settings

    assert not Path(settings.STATIC_ROOT).is_relative_to(settings.DATA_DIR)


# -- .dockerignore ----------------------------------------------------------------------------


def ignore_patterns() -> list[re.Pattern]:
    """.dockerignore as Docker applies it: each pattern is anchored at the context's root, `**`
    crosses folders, `*` does not; a matching folder is skipped with all it holds."""
    compiled = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert not line.startswith("!"), "exceptions are not modelled here"
        pattern = line.strip("/")
        regex = ""
        index = 0
        while index < len(pattern):
            if pattern.startswith("**/", index):
                regex, index = regex + "(?:.*/)?", index + 3
            elif pattern.startswith("**", index):
                regex, index = regex + ".*", index + 2
            elif pattern[index] == "*":
                regex, index = regex + "[^/]*", index + 1
            elif pattern[index] == "?":
                regex, index = regex + "[^/]", index + 1
            else:
                regex, index = regex + re.escape(pattern[index]), index + 1
        compiled.append(re.compile(regex))
    return compiled


def ignored(path: str, patterns: list[re.Pattern]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    return any(p.fullmatch(prefix) for p in patterns for prefix in prefixes)


@pytest.mark.parametrize("path", [
    "tests/render/js/node_modules/marked/lib/marked.esm.js",
    "frontend/node_modules/x/index.js",
    "node_modules/x/index.js",
    "tests/dashboard/test_health.py",
    "bench/traffic_http.py",
    ".git/HEAD",
    "data/kviz.sqlite3",
    "data/secret-key",
    ".env",
    "deploy/.env",
    ".venv/bin/python",
    "captures/web/__pycache__/health.cpython-311.pyc",
    "test-artifacts/screenshot.png",
])
def test_dockerignore_keeps_out(path):
    assert ignored(path, ignore_patterns()), path


@pytest.mark.parametrize("path", [
    "manage.py", "requirements.txt", "constraints.txt", "kviz/settings.py",
    "captures/web/health.py", "captures/analysis/engine.py", "frontend/static/diagram/view.js",
    "frontend/templates", "deploy/lab/meshproxy.py",
])
def test_dockerignore_keeps_what_the_image_runs(path):
    assert (ROOT / path).exists(), path
    assert not ignored(path, ignore_patterns()), path


# -- Kubernetes -------------------------------------------------------------------------------


def k8s(kind: str, name: str) -> dict:
    for path in sorted((ROOT / "deploy/kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == kind and doc["metadata"]["name"] == name:
                return doc
    raise AssertionError(f"no {kind} {name}")


def test_the_web_pods_are_probed_migrate_first_and_run_as_non_root():
    pod = k8s("Deployment", "kviz-web")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    [migrate] = pod["initContainers"]
    assert migrate["command"] == ["python", "manage.py", "migrate", "--noinput"]
    [web] = pod["containers"]
    assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert web["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert web["securityContext"]["allowPrivilegeEscalation"] is False
    assert web["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_the_worker_waits_for_the_migrations():
    pod = k8s("Deployment", "kviz-worker")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    [wait] = pod["initContainers"]
    assert "migrate --check" in " ".join(wait["command"])


def test_kubernetes_runs_captures_in_threads_and_analyses_in_a_deployment_of_their_own():
    [capture] = k8s("Deployment", "kviz-worker")["spec"]["template"]["spec"]["containers"]
    pod = k8s("Deployment", "kviz-analysis-worker")["spec"]["template"]["spec"]
    [analysis] = pod["containers"]
    assert_capture_and_analysis_workers(capture["command"], analysis["command"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    [wait] = pod["initContainers"]
    assert "migrate --check" in " ".join(wait["command"])
    assert analysis["securityContext"]["capabilities"]["drop"] == ["ALL"]
    kustomization = yaml.safe_load((ROOT / "deploy/kubernetes/kustomization.yaml").read_text())
    assert "analysis-worker.yaml" in kustomization["resources"]


def test_the_kubernetes_secret_names_a_secret_key():
    assert "SECRET_KEY" in k8s("Secret", "kviz")["stringData"]
