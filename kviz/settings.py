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


def envnetworks(name: str, default: str) -> list:
    """Comma-separated networks in CIDR notation (an address alone is one host)."""
    import ipaddress

    try:
        return [ipaddress.ip_network(item, strict=False) for item in envlist(name, default)]
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {exc} (use CIDRs such as 10.0.0.0/8)") from None


DEBUG = envbool("DEBUG", False)
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")

DATA_DIR = Path(env("KVIZ_DATA_DIR", str(BASE_DIR / "data"))).resolve()


def _generated_secret_key(path: Path) -> str:
    """The key kept at `path`, made on first start. Processes starting together (web and
    worker) agree: the key is written aside and linked into place, and only one link wins."""
    import secrets
    import tempfile

    try:
        key = path.read_text().strip()
        if key:
            return key
    except FileNotFoundError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".secret-key-",
                                         delete=False) as aside:
            aside.write(secrets.token_urlsafe(50) + "\n")
        os.chmod(aside.name, 0o600)
        try:
            os.link(aside.name, path)
        except FileExistsError:
            pass  # another process was first: use its key
        finally:
            os.unlink(aside.name)
        return path.read_text().strip()
    except OSError as exc:
        raise ImproperlyConfigured(f"no SECRET_KEY set and none can be kept in {path} "
                                   f"({exc}): set SECRET_KEY or SECRET_KEY_FILE") from exc


# Never a known default: without SECRET_KEY, a random key made on first start is kept in the
# data directory (sessions and tokens survive restarts; every installation has its own).
# The container image sets KVIZ_REQUIRE_SECRET_KEY: there a key made on first start would
# silently differ between containers that do not share the volume it lands in.
if envbool("KVIZ_REQUIRE_SECRET_KEY", False) and not env("SECRET_KEY", ""):
    raise ImproperlyConfigured("SECRET_KEY is required here (KVIZ_REQUIRE_SECRET_KEY): set "
                               "SECRET_KEY or SECRET_KEY_FILE to 50+ random characters")
SECRET_KEY = env("SECRET_KEY", "") or _generated_secret_key(DATA_DIR / "secret-key")
if SECRET_KEY in ("change-me", "changeme", "kviz-insecure-development-key-change-me"):
    raise ImproperlyConfigured("SECRET_KEY is a placeholder from an example: set a random one, "
                               "or unset it and kviz keeps a generated one in KVIZ_DATA_DIR")
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
    # First: probes answer before host validation and the HTTPS redirect (a kubelet probes by
    # pod IP over plain HTTP), with no session (captures/web/health.py).
    "captures.web.health.ProbeMiddleware",
    # /metrics likewise: Prometheus scrapes a pod by its IP over plain HTTP
    # (captures/web/metrics.py decides who may read it).
    "captures.web.metrics.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "captures.web.csp.ContentSecurityPolicyMiddleware",
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
# libpq waits for a silent host without end; a request (and /readyz) gives up after this.
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", envint("KVIZ_DB_CONNECT_TIMEOUT", 5))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Channels and Celery both ride on Redis when REDIS_URL is set. Without it kviz runs embedded:
# an in-memory channel layer, and captures run in a thread of the web process (captures.jobs.tasks
# .enqueue), because an eager Celery task would hold the request open for the whole capture.
# channels_redis waits for a socket's next event with a blocking read of up to 5 s; redis-py 8
# times socket reads out after 5 s by default, so every idle socket raced its own timeout and
# closed with 1011. Reads get a margin over the blocking read; a dead Redis is still noticed.
REDIS_READ_TIMEOUT = 30


def redis_channel_layer(url: str, prefix: str) -> dict:
    return {"BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": url, "socket_timeout": REDIS_READ_TIMEOUT}],
                       "prefix": prefix}}


if REDIS_URL:
    CHANNEL_LAYERS = {"default": redis_channel_layer(REDIS_URL,
                                                     env("KVIZ_CHANNELS_PREFIX", "kviz"))}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
# The cache holds sign-in failure counts, which every web process must share.
CACHES = {"default": {
    "BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
    "KEY_PREFIX": env("KVIZ_CHANNELS_PREFIX", "kviz"),
} if REDIS_URL else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL and envbool("CELERY_EAGER_WITHOUT_REDIS", True)
CELERY_TASK_DEFAULT_QUEUE = env("KVIZ_QUEUE", "kviz")
# Analyses (an upload's, a re-analysis, what an interrupted capture stored) have a queue of
# their own, served by a worker of its own (scripts/start.sh, docker-compose.yml): an upload is
# analysed while hour-long captures hold every thread of the capture workers. Uploads are
# sent there by captures.jobs.tasks.enqueue, which looks at the capture's kind.
KVIZ_ANALYSIS_QUEUE = env("KVIZ_ANALYSIS_QUEUE", f"{CELERY_TASK_DEFAULT_QUEUE}-analysis")
CELERY_TASK_ROUTES = {name: {"queue": KVIZ_ANALYSIS_QUEUE} for name in (
    "captures.analyse_upload", "captures.analyze_capture", "captures.reanalyse_capture")}
# A capture task is acknowledged only when it ends, and a worker reserves no more tasks than it
# has threads free: a worker killed mid-capture leaves its messages to be redelivered, and the
# runner's race-safe claim (queued -> running) turns a redelivery into a no-op.
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
     "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Sign-in throttling (captures/access/throttle.py): failures counted per account and per
# address over a window; past the limit every attempt is refused until the window ends.
KVIZ_LOGIN_FAILURES_PER_ACCOUNT = envint("KVIZ_LOGIN_FAILURES_PER_ACCOUNT", 5)
KVIZ_LOGIN_FAILURES_PER_ADDRESS = envint("KVIZ_LOGIN_FAILURES_PER_ADDRESS", 20)
KVIZ_LOGIN_WINDOW_SECONDS = envint("KVIZ_LOGIN_WINDOW_SECONDS", 900)

# Behind a TLS-terminating proxy or ingress (the deploy files): KVIZ_BEHIND_PROXY trusts its
# X-Forwarded-Proto (and X-Forwarded-For for throttling); KVIZ_HTTPS makes kviz HTTPS-only
# (redirect, HSTS, cookies sent over HTTPS only). Off by default: start.sh serves plain HTTP
# on 127.0.0.1.
KVIZ_BEHIND_PROXY = envbool("KVIZ_BEHIND_PROXY", False)
if KVIZ_BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
KVIZ_HTTPS = envbool("KVIZ_HTTPS", False)
if KVIZ_HTTPS:
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = envint("KVIZ_HSTS_SECONDS", 31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
# Sent with every answer (captures/web/csp.py): scripts and styles from kviz's
# own origin only, never inline.
KVIZ_CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data: blob:",
    "connect-src 'self'", "font-src 'self'", "object-src 'none'", "base-uri 'none'",
    "form-action 'self'", "frame-ancestors 'none'",
])
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
# Beside the code, never in the data volume: the image collects its static files when it is
# built (/app/static), so a volume made by an older image cannot serve stale ones.
STATIC_ROOT = Path(env("KVIZ_STATIC_ROOT", str(BASE_DIR / "static")))
STATICFILES_DIRS = [BASE_DIR / "frontend" / "static"]
# Whitenoise serves the frontend straight from its folder: no collectstatic step to forget,
# and the files are few and small. The image turns this off and serves STATIC_ROOT.
WHITENOISE_USE_FINDERS = envbool("KVIZ_STATIC_FINDERS", True)

# Where capture files and analyses are kept (captures/adapters/storage.py): Django's storage
# alias "captures". KVIZ_STORAGE=local (the default) keeps them in DATA_DIR as before; s3 puts
# them in an S3-compatible bucket, so web and workers share nothing but the database, Redis and
# the bucket (a worker still spools a live capture in its own DATA_DIR while it records).
# Credentials come from the usual AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, or
# the instance's role); KVIZ_S3_ENDPOINT_URL points at MinIO, Ceph or another S3 look-alike.
KVIZ_STORAGE = env("KVIZ_STORAGE", "local").strip().lower() or "local"
KVIZ_S3_BUCKET = env("KVIZ_S3_BUCKET", "")
KVIZ_S3_ENDPOINT_URL = env("KVIZ_S3_ENDPOINT_URL", "")
KVIZ_S3_REGION = env("KVIZ_S3_REGION", "")
KVIZ_S3_PREFIX = env("KVIZ_S3_PREFIX", "").strip("/")  # keys under this "folder" of the bucket
KVIZ_S3_ADDRESSING_STYLE = env("KVIZ_S3_ADDRESSING_STYLE", "")  # "path" for most look-alikes


def _capture_storage() -> dict:
    if KVIZ_STORAGE == "local":
        return {"BACKEND": "captures.adapters.storage.DataDirStorage",
                "OPTIONS": {"allow_overwrite": True}}
    if KVIZ_STORAGE != "s3":
        raise ImproperlyConfigured(f"KVIZ_STORAGE={KVIZ_STORAGE!r}: use local or s3")
    if not KVIZ_S3_BUCKET:
        raise ImproperlyConfigured("KVIZ_STORAGE=s3 needs KVIZ_S3_BUCKET")
    options = {"bucket_name": KVIZ_S3_BUCKET, "location": KVIZ_S3_PREFIX,
               "file_overwrite": True, "default_acl": None, "querystring_auth": False}
    if KVIZ_S3_ENDPOINT_URL:
        options["endpoint_url"] = KVIZ_S3_ENDPOINT_URL
    if KVIZ_S3_REGION:
        options["region_name"] = KVIZ_S3_REGION
    if KVIZ_S3_ADDRESSING_STYLE not in ("", "path", "virtual", "auto"):
        raise ImproperlyConfigured(f"KVIZ_S3_ADDRESSING_STYLE={KVIZ_S3_ADDRESSING_STYLE!r}: "
                                   "use path, virtual or auto")
    if KVIZ_S3_ADDRESSING_STYLE:
        options["addressing_style"] = KVIZ_S3_ADDRESSING_STYLE
    # The usual AWS variables, read here too so that AWS_SECRET_ACCESS_KEY_FILE (a mounted
    # secret) works; unset, boto3 looks further (its config files, the instance's role).
    for option, name in (("access_key", "AWS_ACCESS_KEY_ID"),
                         ("secret_key", "AWS_SECRET_ACCESS_KEY"),
                         ("security_token", "AWS_SESSION_TOKEN")):
        if env(name):
            options[option] = env(name)
    return {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options}


STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "captures": _capture_storage(),
}

# Analysis limits: a capture beyond these is analysed as far as the limits allow and flagged
# partial, so a hostile or huge file cannot exhaust the worker.
KVIZ_MAX_FLOWS = envint("KVIZ_MAX_FLOWS", 200_000)
# An analysis of more messages than this is announced completed with its diagram's first screen
# (the layout of its first messages) and laid out whole after that (captures.jobs.diagram_cache).
KVIZ_FIRST_SCREEN_MESSAGES = envint("KVIZ_FIRST_SCREEN_MESSAGES", 2000)
KVIZ_LAB_PREFIX = env("KVIZ_LAB_PREFIX", "kviz")

# Capture limits: what a user may ask for at most, and what a capture gets when it asks nothing.
KVIZ_MAX_SECONDS = envint("KVIZ_MAX_SECONDS", 3600)
KVIZ_MAX_PACKETS = envint("KVIZ_MAX_PACKETS", 1_000_000)
KVIZ_MAX_BYTES = envint("KVIZ_MAX_BYTES", 1024 * 1024 * 1024)
KVIZ_MAX_UPLOAD_BYTES = envint("KVIZ_MAX_UPLOAD_BYTES", 100 * 1024 * 1024)
KVIZ_MAX_CAPTURE_FILES = envint("KVIZ_MAX_CAPTURE_FILES", 16)  # per upload or path capture
# One frame's dissection (GET .../frames/0/<n>/) runs tshark over the stored file: at most
# KVIZ_TSHARK_CONCURRENCY at once over all web processes (the rest: 429), each within
# KVIZ_TSHARK_SECONDS and KVIZ_TSHARK_MEMORY_MB of address space, and at most
# KVIZ_FRAMES_PER_MINUTE per user and per share link.
KVIZ_TSHARK_CONCURRENCY = envint("KVIZ_TSHARK_CONCURRENCY", 4)
KVIZ_TSHARK_SECONDS = envint("KVIZ_TSHARK_SECONDS", 20)
KVIZ_TSHARK_MEMORY_MB = envint("KVIZ_TSHARK_MEMORY_MB", 1024)
KVIZ_FRAMES_PER_MINUTE = envint("KVIZ_FRAMES_PER_MINUTE", 60)
# With a remote storage (S3) tshark needs the capture's file on this machine: the web keeps
# the files it fetched for frame clicks in KVIZ_FRAME_CACHE_DIR (default <DATA_DIR>/frame-cache),
# at most KVIZ_FRAME_CACHE_BYTES together, least recently used first out (0: no cache, a
# fresh copy per click). captures/jobs/local_copy.py.
KVIZ_FRAME_CACHE_DIR = env("KVIZ_FRAME_CACHE_DIR", "")
KVIZ_FRAME_CACHE_BYTES = envint("KVIZ_FRAME_CACHE_BYTES", 2 * 1024**3)
# A running capture whose worker has not written a heartbeat for this long is `interrupted`.
KVIZ_HEARTBEAT_TIMEOUT = envint("KVIZ_HEARTBEAT_TIMEOUT", 30)
KVIZ_SHARE_DAYS = envint("KVIZ_SHARE_DAYS", 7)
# What one capture's links may add up to: at most this many valid at once, each valid at most
# this many days.
KVIZ_SHARE_MAX_LINKS = envint("KVIZ_SHARE_MAX_LINKS", 20)
KVIZ_SHARE_MAX_DAYS = envint("KVIZ_SHARE_MAX_DAYS", 30)
# An open share WebSocket closes at once when its link is revoked (a channel-layer message);
# should that message be lost, it looks at its link again at most this often while events flow.
KVIZ_SHARE_RECHECK_SECONDS = envint("KVIZ_SHARE_RECHECK_SECONDS", 5)
# Open share WebSockets (anyone with a link may open them): at most this many per link and per
# client address, over all web processes.
KVIZ_SHARE_SOCKETS_PER_LINK = envint("KVIZ_SHARE_SOCKETS_PER_LINK", 20)
KVIZ_SHARE_SOCKETS_PER_ADDRESS = envint("KVIZ_SHARE_SOCKETS_PER_ADDRESS", 20)
# Live view: events kept per capture for reconnecting browsers (1000: at least 100 s at the
# full rate of ten batches a second), rows per batch before a batch is thinned.
KVIZ_LIVE_RETAIN = envint("KVIZ_LIVE_RETAIN", 1000)
KVIZ_LIVE_MAX_ROWS = envint("KVIZ_LIVE_MAX_ROWS", 200)
KVIZ_LIVE_PREFIX = env("KVIZ_LIVE_PREFIX", "kviz:live:")  # Redis keys of the replay streams

# Retention and quotas (captures/jobs/retention.py). A finished capture is deleted, files and
# all, KVIZ_RETENTION_DAYS after it finished unless pinned (0: kept forever) by
# `manage.py kviz_cleanup`. A user's captures may hold at most KVIZ_USER_QUOTA_BYTES together
# (0: no quota; beyond it uploads and new captures are refused with 507), and a user may have
# at most KVIZ_MAX_CAPTURES_PER_USER live captures queued or running at once (0: no limit;
# beyond it 429).
KVIZ_RETENTION_DAYS = envint("KVIZ_RETENTION_DAYS", 30)
KVIZ_USER_QUOTA_BYTES = envint("KVIZ_USER_QUOTA_BYTES", 0)
KVIZ_MAX_CAPTURES_PER_USER = envint("KVIZ_MAX_CAPTURES_PER_USER", 3)
# Prometheus /metrics (captures/web/metrics.py): readable with `Authorization: Bearer
# <KVIZ_METRICS_TOKEN>`, or without a token from KVIZ_METRICS_ALLOW (CIDRs; loopback by
# default). Anyone else gets 403.
KVIZ_METRICS_TOKEN = env("KVIZ_METRICS_TOKEN", "")
KVIZ_METRICS_ALLOW = envnetworks("KVIZ_METRICS_ALLOW", "127.0.0.1/32,::1/128")



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
# Seconds (captures/sources/kubernetes.py): the capture container's image pull and start, tcpdump
# opening the capture, how long the capture container waits for kviz's exec before it ends by
# itself, and the WebSocket ping period (client-go's is 5 s).
KVIZ_K8S_START_TIMEOUT = envint("KVIZ_K8S_START_TIMEOUT", 120)
KVIZ_K8S_LISTEN_TIMEOUT = envint("KVIZ_K8S_LISTEN_TIMEOUT", 20)
KVIZ_K8S_HOLD_WAIT = envint("KVIZ_K8S_HOLD_WAIT", 60)
KVIZ_K8S_PING_PERIOD = float(env("KVIZ_K8S_PING_PERIOD", "5"))
