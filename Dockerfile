# kviz: one image for the web process (daphne) and the worker (celery); docker-compose.yml
# picks the command. Configured by environment only (see kviz/settings.py).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DEBIAN_FRONTEND=noninteractive \
    KVIZ_DATA_DIR=/data

# tshark/dumpcap and tcpdump capture and compile filters; iproute2 lists interfaces and
# namespaces. Non-root capture is not set up: the worker needs CAP_NET_RAW (see compose file).
RUN echo "wireshark-common wireshark-common/install-setuid boolean false" \
        | debconf-set-selections \
    && apt-get update \
    && apt-get install -y --no-install-recommends tshark tcpdump iproute2 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt constraints.txt ./
RUN pip install --no-cache-dir -r requirements.txt -c constraints.txt
COPY . .
# A throwaway key for this step only: without one kviz would make and keep a key in /data,
# and every container of the image would share it.
RUN mkdir -p /data && DATABASE_URL=sqlite:////tmp/collect.sqlite3 SECRET_KEY=collectstatic-only \
    python manage.py collectstatic --noinput

EXPOSE 8000
CMD ["python", "-m", "kviz.serve", "-b", "0.0.0.0", "-p", "8000", "kviz.asgi:application"]
