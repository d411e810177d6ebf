"""countstream settings: everything comes from environment variables with loopback defaults.

Every variable is listed in the README's configuration table. Set COUNTSTREAM_ENV=production
to get production checks (a strong SECRET_KEY, DEBUG off, no loopback defaults for services)
and HTTPS hardening; docs/reliability.md describes them.
"""

import os
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

COUNTSTREAM_ENV = env.str("COUNTSTREAM_ENV", default="development")
PRODUCTION = COUNTSTREAM_ENV == "production"

DEBUG = env.bool("DJANGO_DEBUG", default=not PRODUCTION)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
# Production never falls back to a development default for a secret, an address or a
# credential: each of these must come from its environment variable. METRICS_TOKEN too:
# behind a reverse proxy on the same host, every client would pass the loopback check.
PRODUCTION_REQUIRED_ENV = (
    "DJANGO_SECRET_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "KAFKA_BOOTSTRAP_SERVERS",
    "METRICS_TOKEN",
)
if PRODUCTION:
    if missing := [name for name in PRODUCTION_REQUIRED_ENV if not env.str(name, default="")]:
        raise ImproperlyConfigured(f"COUNTSTREAM_ENV=production needs {', '.join(missing)} set")
    if DEBUG:
        raise ImproperlyConfigured("COUNTSTREAM_ENV=production refuses DJANGO_DEBUG on")
    if len(SECRET_KEY) < 50:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be at least 50 random characters")
SECRET_KEY = SECRET_KEY or "dev-only-insecure-key-do-not-use-in-production"

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# --- Production hardening: HTTPS only, secure cookies, HSTS (docs/reliability.md) -----------
if PRODUCTION:
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    # Probes and scrapers speak plain HTTP inside the cluster; a redirect would fail them.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    if env.bool("DJANGO_BEHIND_TLS_PROXY", default=False):
        # Trust X-Forwarded-Proto only behind a proxy that sets it and drops clients' copies.
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_SUBDOMAINS", default=True)
    # Preloading is a promise to browsers' lists that only the domain's owner can make.
    SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
    SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "infra",
    "outbox",
    "counts",
    "dashboard",
]

MIDDLEWARE = [
    "config.metrics.RequestMetricsMiddleware",
    "infra.database.DatabaseUnavailableMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

# --- PostgreSQL -------------------------------------------------------------------------
DATABASES = {
    "default": env.db(
        "DATABASE_URL", default="postgres://countstream:countstream@127.0.0.1:5432/countstream"
    )
}
# Every process borrows its connections from a psycopg pool of its own and gives them back
# at the end of each request (Django's pool needs CONN_MAX_AGE 0 for that). So connections
# are reused and a process never holds more than DATABASE_POOL_MAX_SIZE of them, whatever
# its number of threads; a request that gets none within DATABASE_POOL_TIMEOUT seconds is
# answered 503 with Retry-After (infra/database.py). Sizing: docs/operations.md.
DATABASE_POOL_MIN_SIZE = env.int("DATABASE_POOL_MIN_SIZE", default=2)
DATABASE_POOL_MAX_SIZE = env.int("DATABASE_POOL_MAX_SIZE", default=4)
DATABASE_POOL_TIMEOUT = env.float("DATABASE_POOL_TIMEOUT", default=3.0)
DATABASES["default"]["CONN_MAX_AGE"] = 0
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Server-side binding lets psycopg prepare the statements a process repeats (every write
# and read of the API; from their fifth run, psycopg's default), so PostgreSQL plans each
# once per connection, not per execution; a pooled connection keeps them from request to
# request. Django would not prepare any by itself.
_SERVER_SIDE_BINDING = env.bool("DATABASE_SERVER_SIDE_BINDING", default=True)
DATABASES["default"]["OPTIONS"] = {
    "connect_timeout": 5,
    "server_side_binding": _SERVER_SIDE_BINDING,
    "prepare_threshold": 5 if _SERVER_SIDE_BINDING else None,
    "pool": {
        "min_size": min(DATABASE_POOL_MIN_SIZE, DATABASE_POOL_MAX_SIZE),
        "max_size": DATABASE_POOL_MAX_SIZE,
        "timeout": DATABASE_POOL_TIMEOUT,
    },
}
# The web's worker processes (uvicorn reads the same variable): each has a pool of its own,
# so the web holds at most WEB_CONCURRENCY x (DATABASE_POOL_MAX_SIZE + 1 for waking the
# relay) connections; a system check warns when that is over half of PostgreSQL's default
# max_connections.
WEB_CONCURRENCY = env.int("WEB_CONCURRENCY", default=os.cpu_count() or 1)
# Each worker runs the sync requests (all but the live stream) on this many threads
# (config/asgi.py); more requests than that wait in line for a thread, not for the pool.
WEB_THREADS = env.int("WEB_THREADS", default=8)
# A request still waiting for one of them after this many seconds is answered 503 with
# Retry-After, unrun: under overload no client waits without bound.
WEB_QUEUE_TIMEOUT = env.float("WEB_QUEUE_TIMEOUT", default=5.0)
if WEB_QUEUE_TIMEOUT <= 0:
    raise ImproperlyConfigured("WEB_QUEUE_TIMEOUT must be a number of seconds above 0")
# Parallel test runs (and a test run beside the dev stack) each get their own database.
DATABASES["default"]["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME", default="test_countstream")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: cache, live stream, Celery broker -------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
CACHE_KEY_PREFIX = env.str("CACHE_KEY_PREFIX", default="countstream")
CACHE_TIMEOUT = env.int("CACHE_TIMEOUT", default=300)
# Seconds to reach Redis before a cache read falls back to the database or a live stream
# being opened ends (the browser retries).
REDIS_CONNECT_TIMEOUT = 0.5
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": CACHE_KEY_PREFIX,
        "TIMEOUT": CACHE_TIMEOUT,
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            "SOCKET_CONNECT_TIMEOUT": REDIS_CONNECT_TIMEOUT,
            "SOCKET_TIMEOUT": 0.5,
        },
    }
}

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/1")
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="countstream")
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# The periodic jobs are idempotent: a task lost with a killed worker simply runs again.
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A run still queued when the next is due is dropped ("expires"): the next does the same work.
OUTBOX_PRUNE_INTERVAL_SECONDS = env.float("OUTBOX_PRUNE_INTERVAL_SECONDS", default=3600)
DASHBOARD_RECONCILE_INTERVAL_SECONDS = env.float(
    "DASHBOARD_RECONCILE_INTERVAL_SECONDS", default=300
)
# What an open live stream may have queued (bytes) before it is cut off with `reset`:
# a viewer that stops reading must not grow the web's memory (docs/caching.md).
DASHBOARD_STREAM_BUFFER_BYTES = env.int("DASHBOARD_STREAM_BUFFER_BYTES", default=4 * 2**20)
IDEMPOTENCY_KEY_PRUNE_INTERVAL_SECONDS = env.float(
    "IDEMPOTENCY_KEY_PRUNE_INTERVAL_SECONDS", default=3600
)
CELERY_BEAT_SCHEDULE = {
    "prune-published-outbox": {
        "task": "outbox.tasks.prune_published_outbox",
        "schedule": OUTBOX_PRUNE_INTERVAL_SECONDS,
        "options": {"expires": OUTBOX_PRUNE_INTERVAL_SECONDS},
    },
    "prune-idempotency-keys": {
        "task": "counts.tasks.prune_idempotency_keys",
        "schedule": IDEMPOTENCY_KEY_PRUNE_INTERVAL_SECONDS,
        "options": {"expires": IDEMPOTENCY_KEY_PRUNE_INTERVAL_SECONDS},
    },
    "reconcile-dashboard": {
        "task": "dashboard.tasks.reconcile_dashboard",
        "schedule": DASHBOARD_RECONCILE_INTERVAL_SECONDS,
        "options": {"expires": DASHBOARD_RECONCILE_INTERVAL_SECONDS},
    },
}

# The web process's /metrics answers loopback clients, or scrapers sending this bearer token.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# --- Kafka --------------------------------------------------------------------------------
KAFKA_BOOTSTRAP_SERVERS = env.str("KAFKA_BOOTSTRAP_SERVERS", default="127.0.0.1:9092")
# Prepended to every topic name, so tests and several environments can share one cluster.
KAFKA_TOPIC_PREFIX = env.str("KAFKA_TOPIC_PREFIX", default="")
KAFKA_CONSUMER_GROUP = env.str("KAFKA_CONSUMER_GROUP", default="countstream-dashboard")
# Static group membership for `manage.py consume` (empty: off). Unique per consumer process,
# e.g. its pod name; the trade-off is in docs/reliability.md (known limits).
KAFKA_CONSUMER_INSTANCE_ID = env.str("KAFKA_CONSUMER_INSTANCE_ID", default="")
# Security settings passed straight to librdkafka (producer, consumer and admin client).
KAFKA_CLIENT_CONFIG = {
    key: value
    for key, value in {
        "bootstrap.servers": KAFKA_BOOTSTRAP_SERVERS,
        "security.protocol": env.str("KAFKA_SECURITY_PROTOCOL", default=""),
        "sasl.mechanism": env.str("KAFKA_SASL_MECHANISM", default=""),
        "sasl.username": env.str("KAFKA_SASL_USERNAME", default=""),
        "sasl.password": env.str("KAFKA_SASL_PASSWORD", default=""),
        "ssl.ca.location": env.str("KAFKA_SSL_CA_LOCATION", default=""),
        "ssl.certificate.location": env.str("KAFKA_SSL_CERTIFICATE_LOCATION", default=""),
        "ssl.key.location": env.str("KAFKA_SSL_KEY_LOCATION", default=""),
    }.items()
    if value
}
KAFKA_PRODUCER_CONFIG = {
    "linger.ms": env.int("KAFKA_LINGER_MS", default=1),
    "compression.type": env.str("KAFKA_COMPRESSION_TYPE", default="lz4"),
}

# --- Django REST framework ---------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "counts.api.authentication.CachedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "counts.api.exceptions.exception_handler",
    "DEFAULT_THROTTLE_RATES": {"writes": env.str("API_WRITE_THROTTLE", default="100000/minute")},
}
# How long a process trusts a token it has looked up: a deleted token, or a deactivated
# user's, keeps working for at most this long (0: every request looks its token up).
API_TOKEN_CACHE_SECONDS = env.float("API_TOKEN_CACHE_SECONDS", default=10.0)
# How long a write's Idempotency-Key is remembered: a retry within it is answered, not redone.
IDEMPOTENCY_KEY_RETENTION_HOURS = env.float("IDEMPOTENCY_KEY_RETENTION_HOURS", default=24)
SPECTACULAR_SETTINGS = {
    "TITLE": "countstream API",
    "DESCRIPTION": "Named counters; every change is published to Kafka through an outbox.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and ReDoc assets are served from the sidecar package: no CDN needed.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- The dashboard: who may see it (dashboard/access.py) -----------------------------------
# Off: only staff and holders of dashboard.view_dashboard see the page and its stream.
DASHBOARD_PUBLIC = env.bool("DASHBOARD_PUBLIC", default=False)
# Points of each count's history kept for its chart (about 30 bytes each in Redis).
DASHBOARD_HISTORY_POINTS = env.int("DASHBOARD_HISTORY_POINTS", default=120)
LOGIN_URL = "dashboard:login"
LOGIN_REDIRECT_URL = "dashboard:page"
LOGOUT_REDIRECT_URL = "dashboard:login"

# --- Internationalisation, static files --------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / ".local" / "static"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Outbox and relay ----------------------------------------------------------------------
# Events are spread over this many lanes by key; relays share lanes, never split one.
OUTBOX_LANES = env.int("OUTBOX_LANES", default=64)
OUTBOX_RETENTION_DAYS = env.int("OUTBOX_RETENTION_DAYS", default=7)
# A row Kafka refuses this many times for a reason of its own (e.g. too large) is parked.
OUTBOX_MAX_ATTEMPTS = env.int("OUTBOX_MAX_ATTEMPTS", default=10)
# The relay's Prometheus endpoint (0 disables it); loopback unless told otherwise.
# RELAY_METRICS_ADDRESS is the host's former name, still read when RELAY_METRICS_HOST is unset.
RELAY_METRICS_PORT = env.int("RELAY_METRICS_PORT", default=9101)
RELAY_METRICS_HOST = env.str(
    "RELAY_METRICS_HOST", default=env.str("RELAY_METRICS_ADDRESS", default="127.0.0.1")
)

# --- Kafka topics (CA-710A partitions, CA-710B retention; see docs/operations.md) -----------
KAFKA_TOPIC_PARTITIONS = env.int("KAFKA_TOPIC_PARTITIONS", default=6)
KAFKA_TOPIC_REPLICATION_FACTOR = env.int("KAFKA_TOPIC_REPLICATION_FACTOR", default=1)
KAFKA_TOPIC_MIN_INSYNC_REPLICAS = env.int("KAFKA_TOPIC_MIN_INSYNC_REPLICAS", default=1)
KAFKA_TOPIC_RETENTION_MS = env.int("KAFKA_TOPIC_RETENTION_MS", default=14 * 24 * 3600 * 1000)
KAFKA_TOPIC_RETENTION_BYTES = env.int("KAFKA_TOPIC_RETENTION_BYTES", default=-1)
# Where the consumer parks messages it cannot parse or validate (logical name).
KAFKA_DEAD_LETTER_TOPIC = env.str("KAFKA_DEAD_LETTER_TOPIC", default="count-events-dead-letter")

# --- Consumer ------------------------------------------------------------------------------
# Where `manage.py consume` serves its Prometheus metrics (port 0 turns them off); set the
# host to 0.0.0.0 where a scraper on another machine or pod must reach them.
CONSUMER_METRICS_PORT = env.int("CONSUMER_METRICS_PORT", default=9102)
CONSUMER_METRICS_HOST = env.str("CONSUMER_METRICS_HOST", default="127.0.0.1")
