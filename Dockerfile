# kviz: one image for the web process (daphne), the worker (celery) and the one-shot migrate
# step; docker-compose.yml and deploy/kubernetes pick the command. Configured by environment
# only (see kviz/settings.py); docs/deploy.md tells how to run it.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DEBIAN_FRONTEND=noninteractive \
    KVIZ_DATA_DIR=/data

# tshark/dumpcap and tcpdump capture and compile filters; iproute2 lists interfaces and
# namespaces; libcairo2 and a font draw the postmortem bundle's PNG (cairosvg). kviz runs as
# an unprivileged user: dumpcap alone gets CAP_NET_RAW as a file capability (kviz captures
# with -p, never promiscuous, so NET_ADMIN is not needed). A container gains it only if
# NET_RAW is in its bounding set and no-new-privileges is off: the compose file grants that to
# the worker and drops every capability from the web.
RUN echo "wireshark-common wireshark-common/install-setuid boolean false" \
        | debconf-set-selections \
    && apt-get update \
    && apt-get install -y --no-install-recommends tshark tcpdump iproute2 libcap2-bin \
        libcairo2 fonts-dejavu-core \
    && setcap cap_net_raw=eip /usr/bin/dumpcap \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 1000 kviz \
    && useradd --system --uid 1000 --gid kviz --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin kviz

WORKDIR /app
COPY requirements.txt constraints.txt ./
RUN pip install --no-cache-dir -r requirements.txt -c constraints.txt
COPY . .
# Static files are collected into the image (/app/static), never into the data volume. A
# throwaway key and database for this step only: nothing of either is kept. /data belongs to
# kviz, so a new named volume mounted there does too.
RUN DATABASE_URL=sqlite:////tmp/collect.sqlite3 SECRET_KEY=collectstatic-only \
        KVIZ_DATA_DIR=/tmp/collect KVIZ_STATIC_ROOT=/app/static \
        python manage.py collectstatic --noinput -v0 \
    && rm -rf /tmp/collect /tmp/collect.sqlite3 \
    && mkdir -p /data && chown kviz:kviz /data

# Served from the collected files; and no key made up per container: SECRET_KEY must be given.
ENV KVIZ_STATIC_ROOT=/app/static KVIZ_STATIC_FINDERS=false KVIZ_REQUIRE_SECRET_KEY=true
USER kviz:kviz
EXPOSE 8000
# Exec form: daphne is PID 1 and gets `docker stop`'s SIGTERM itself.
CMD ["python", "-m", "kviz.serve", "-b", "0.0.0.0", "-p", "8000", "kviz.asgi:application"]
