"""Settings a deployment relies on: `check --deploy` clean with the shipped deploy files, a
generated secret key, password rules, sign-in throttling, and the security headers."""

from __future__ import annotations

import os
import re
import secrets
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from django.test import override_settings

from .conftest import ROOT

pytestmark = pytest.mark.django_db(transaction=True)


def clean_env(data_dir, **extra) -> dict:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("KVIZ_", "SECRET_KEY", "DATABASE_URL", "REDIS_URL",
                                  "ALLOWED_HOSTS", "CSRF_"))}
    return {**env, "KVIZ_DATA_DIR": str(data_dir), "DJANGO_SETTINGS_MODULE": "kviz.settings",
            **extra}


def manage(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def compose_env() -> dict:
    """The web container's environment as docker-compose.yml gives it, with its defaults, and
    a random key where it requires one (`${SECRET_KEY:?...}`), as the user's .env gives it."""
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = doc["x-kviz-env"]
    filled = {key: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))
              for key, value in env.items()}
    return {key: secrets.token_urlsafe(50) if re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", value)
            else value for key, value in filled.items()}


def configmap_env() -> dict:
    env = {}
    for name in ("configmap.yaml", "secret.yaml"):
        doc = yaml.safe_load((ROOT / "deploy/kubernetes" / name).read_text())
        env.update(doc.get("data") or doc.get("stringData") or {})
    if env.get("SECRET_KEY") == "change-me":  # the placeholder secret.yaml says to replace
        env["SECRET_KEY"] = secrets.token_urlsafe(50)
    return env


@pytest.mark.parametrize("deployment", [compose_env, configmap_env])
def test_check_deploy_is_clean_with_the_shipped_deploy_files(deployment, tmp_path):
    shipped = {key: value for key, value in deployment().items()
               if key not in ("DATABASE_URL", "REDIS_URL", "POSTGRES_PASSWORD")}
    shipped["KVIZ_DATA_DIR"] = str(tmp_path)  # the data volume
    result = manage(clean_env(tmp_path, **shipped), "check", "--deploy", "--fail-level",
                    "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
    # And the same check does speak up without them: it is not silenced.
    bare = manage(clean_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert bare.returncode != 0 and "security.W004" in bare.stdout + bare.stderr


def test_a_secret_key_is_generated_once_and_shared(tmp_path):
    env = clean_env(tmp_path)
    show = [sys.executable, "-c",
            "from django.conf import settings; print(settings.SECRET_KEY)"]

    def start(_):
        return subprocess.run(show, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=60, check=True).stdout.strip()

    with ThreadPoolExecutor(4) as pool:  # web and workers starting together
        keys = set(pool.map(start, range(4)))
    assert len(keys) == 1
    key = keys.pop()
    assert len(key) >= 50 and key == (tmp_path / "secret-key").read_text().strip()
    assert stat.S_IMODE((tmp_path / "secret-key").stat().st_mode) == 0o600
    assert start(0) == key  # a restart keeps it: sessions survive
    assert not list(tmp_path.glob(".secret-key-*"))
    placeholder = subprocess.run(show, cwd=ROOT, env={**env, "SECRET_KEY": "change-me"},
                                 capture_output=True, text=True, timeout=60)
    assert placeholder.returncode != 0 and "placeholder" in placeholder.stderr


def test_weak_passwords_are_refused():
    from django.contrib.auth.password_validation import validate_password
    from django.core.exceptions import ValidationError

    for weak in ("1", "password123", "12345678901"):
        with pytest.raises(ValidationError):
            validate_password(weak)
    validate_password("kviz-Sturdy-passphrase-42")


@override_settings(KVIZ_LOGIN_FAILURES_PER_ACCOUNT=5, KVIZ_LOGIN_FAILURES_PER_ADDRESS=20,
                   KVIZ_LOGIN_WINDOW_SECONDS=900)
def test_sign_in_is_throttled(client):
    from django.contrib.auth import get_user_model
    from django.core.cache import cache

    cache.clear()
    get_user_model().objects.create_user("carol", password="kviz-Sturdy-passphrase-42")
    codes = [client.post("/login/", {"username": "carol", "password": f"guess{n}"}).status_code
             for n in range(40)]
    assert codes[:5] == [200] * 5 and set(codes[5:]) == {429}
    right = client.post("/login/", {"username": "carol",
                                    "password": "kviz-Sturdy-passphrase-42"})
    assert right.status_code == 429 and "Try again in" in right.content.decode()
    assert int(right["Retry-After"]) > 0
    assert "_auth_user_id" not in client.session
    # Guessing across accounts from one address: refused past the address's limit (20).
    for name in ("dave", "erin", "frank"):
        for n in range(5):
            assert client.post("/login/", {"username": name, "password": f"x{n}"}
                               ).status_code == 200
    assert client.post("/login/", {"username": "gina", "password": "x"}).status_code == 429
    # Once the window is over (the counters expire), the right password signs in.
    cache.clear()
    right = client.post("/login/", {"username": "carol",
                                    "password": "kviz-Sturdy-passphrase-42"})
    assert right.status_code == 302 and "_auth_user_id" in client.session
    # The admin's own sign-in form is not a way around it.
    assert client.get("/admin/login/")["Location"].startswith("/login/")


def test_every_page_carries_the_content_security_policy(client):
    policy = client.get("/login/")["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
