#!/bin/sh
# Fills in nginx.conf from the environment and runs nginx in the foreground (PID 1, so that
# `docker compose stop` reaches it). Without a certificate in $TLS_DIR, makes a self-signed one
# for the names in ALLOWED_HOSTS (mount your own over it).
set -eu
TLS_DIR=${TLS_DIR:-/etc/kviz-proxy/tls}
UPSTREAM=${UPSTREAM:-web:8000}
LISTEN=${LISTEN:-8443}
TEMPLATE=${NGINX_TEMPLATE:-/etc/kviz-proxy/nginx.conf.in}
CONF=${NGINX_CONF:-/etc/nginx/nginx.conf}
MAX_BODY=$(( ${KVIZ_MAX_UPLOAD_BYTES:-104857600} + 1048576 ))
mkdir -p "$TLS_DIR"
if [ ! -s "$TLS_DIR/tls.crt" ] || [ ! -s "$TLS_DIR/tls.key" ]; then
  first=$(echo "${ALLOWED_HOSTS:-localhost}" | cut -d, -f1)
  sans=$(echo "${ALLOWED_HOSTS:-localhost}" | tr ',' '\n' | sed -e 's/^\[//' -e 's/\]$//' | awk '/^[0-9.:]+$/ {printf "%sIP:%s", sep, $0; sep=","; next} {printf "%sDNS:%s", sep, $0; sep=","}')
  openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=$first" \
    -addext "subjectAltName=$sans" -keyout "$TLS_DIR/tls.key" -out "$TLS_DIR/tls.crt" 2>/dev/null
fi
sed -e "s#__UPSTREAM__#$UPSTREAM#" -e "s#__MAX_BODY__#$MAX_BODY#" -e "s#__TLS_DIR__#$TLS_DIR#" \
  -e "s#__LISTEN__#$LISTEN#" "$TEMPLATE" > "$CONF"
exec nginx -c "$CONF" -g "daemon off; pid ${PID_FILE:-/tmp/nginx.pid}; error_log stderr warn;"
