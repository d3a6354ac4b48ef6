"""kviz settings: read from the environment only.

Every setting has a default that lets kviz start on a bare machine (SQLite, a data directory
beside the code, no Redis needed to run the CLI). A `NAME_FILE` variable may stand in for any
`NAME`, so secrets mounted as files work.
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str = "") -> str:
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        try:
            return Path(file_path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={file_path}: {exc}") from exc
    return os.environ.get(name, default)


def envbool(name: str, default: bool) -> bool:
    value = env(name, "true" if default else "false").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use true or false)")


def envint(name: str, default: int) -> int:
    value = env(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from None


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


DEBUG = envbool("DEBUG", False)
SECRET_KEY = env("SECRET_KEY", "kviz-insecure-development-key-change-me")
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")

DATA_DIR = Path(env("KVIZ_DATA_DIR", str(BASE_DIR / "data"))).resolve()
REDIS_URL = env("REDIS_URL", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "captures",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "kviz.urls"
WSGI_APPLICATION = None
ASGI_APPLICATION = "kviz.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "frontend" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", f"sqlite:///{DATA_DIR / 'kviz.sqlite3'}"), conn_max_age=60
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Channels and Celery both ride on Redis when REDIS_URL is set. Without it kviz runs embedded:
# an in-memory channel layer, and captures run in a thread of the web process (captures.jobs.tasks
# .enqueue), because an eager Celery task would hold the request open for the whole capture.
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": env("KVIZ_CHANNELS_PREFIX", "kviz")},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL and envbool("CELERY_EAGER_WITHOUT_REDIS", True)
CELERY_TASK_DEFAULT_QUEUE = env("KVIZ_QUEUE", "kviz")
# A capture task is acknowledged only when it ends, and a worker takes one task at a time: a
# worker killed mid-capture leaves its message to be redelivered, and the runner's race-safe
# claim (queued -> running) turns that redelivery into a no-op.
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "frontend" / "static"]
# Whitenoise serves the frontend straight from its folder: no collectstatic step to forget,
# and the files are few and small.
WHITENOISE_USE_FINDERS = envbool("KVIZ_STATIC_FINDERS", True)

# Analysis limits: a capture beyond these is analysed as far as the limits allow and flagged
# partial, so a hostile or huge file cannot exhaust the worker.
KVIZ_MAX_FLOWS = envint("KVIZ_MAX_FLOWS", 200_000)
KVIZ_LAB_PREFIX = env("KVIZ_LAB_PREFIX", "kviz")

# Capture limits: what a user may ask for at most, and what a capture gets when it asks nothing.
KVIZ_MAX_SECONDS = envint("KVIZ_MAX_SECONDS", 3600)
KVIZ_MAX_PACKETS = envint("KVIZ_MAX_PACKETS", 1_000_000)
KVIZ_MAX_BYTES = envint("KVIZ_MAX_BYTES", 1024 * 1024 * 1024)
KVIZ_MAX_UPLOAD_BYTES = envint("KVIZ_MAX_UPLOAD_BYTES", 100 * 1024 * 1024)
# A running capture whose worker has not written a heartbeat for this long is `interrupted`.
KVIZ_HEARTBEAT_TIMEOUT = envint("KVIZ_HEARTBEAT_TIMEOUT", 30)
KVIZ_SHARE_DAYS = envint("KVIZ_SHARE_DAYS", 7)
# Live view: events kept per capture for reconnecting browsers (1000: at least 100 s at the
# full rate of ten batches a second), rows per batch before a batch is thinned.
KVIZ_LIVE_RETAIN = envint("KVIZ_LIVE_RETAIN", 1000)
KVIZ_LIVE_MAX_ROWS = envint("KVIZ_LIVE_MAX_ROWS", 200)
KVIZ_LIVE_PREFIX = env("KVIZ_LIVE_PREFIX", "kviz:live:")  # Redis keys of the replay streams



def _service_port(url: str, default: int) -> list[int]:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    if not parsed.scheme or parsed.scheme.startswith("sqlite"):
        return []
    try:
        return [parsed.port or default]
    except ValueError:
        return []


# Ports whose traffic a host capture never shows a non-staff user (captures/access/grants.py): the
# dashboard's own (KVIZ_WEB_PORTS: what daphne and a proxy in front of it listen on; its
# cookies and tokens cross them), and the database's and Redis' (sessions, live events).
KVIZ_WEB_PORTS = [int(port) for port in envlist("KVIZ_WEB_PORTS", "8000")]
KVIZ_PROTECTED_PORTS = sorted({
    *KVIZ_WEB_PORTS,
    *_service_port(env("DATABASE_URL", ""), 5432),
    *_service_port(REDIS_URL, 6379),
})

# Kubernetes (captures/adapters/k8s.py): a kubeconfig and context, or in-cluster credentials
# when kviz runs in a pod. Node-capture pods are created in KVIZ_K8S_NAMESPACE (kviz's own).
KVIZ_KUBECONFIG = env("KVIZ_KUBECONFIG", "")
KVIZ_KUBE_CONTEXT = env("KVIZ_KUBE_CONTEXT", "")
KVIZ_K8S_NAMESPACE = env("KVIZ_K8S_NAMESPACE", "")
KVIZ_DEBUG_IMAGE = env("KVIZ_DEBUG_IMAGE", "nicolaka/netshoot:v0.13")
KVIZ_NODE_PRIVILEGED = envbool("KVIZ_NODE_PRIVILEGED", False)
