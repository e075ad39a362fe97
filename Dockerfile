# certstatus: the same install as the README's quick start, run as a non-root user.
#   docker build -t certstatus .
#   docker run --rm -p 8080:8080 -v certstatus-data:/data certstatus          # the demo
#   docker run --rm -p 8080:8080 -e DATABASE_URL=... -e REDIS_URL=... \
#       -e CERTSTATUS_KEY_PASSPHRASE_FILE=/run/secrets/ca-passphrase certstatus serve
FROM python:3.11-slim

# util-linux (unshare) is in the base image; PostgreSQL and Valkey come from pip wheels.
RUN useradd --create-home --uid 10001 certstatus \
    && mkdir /data && chown certstatus:certstatus /data

WORKDIR /src
COPY pyproject.toml README.md ./
COPY ca_core ca_core
COPY responder responder
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir .

ENV PATH=/opt/venv/bin:$PATH \
    CERTSTATUS_DATA_DIR=/data \
    CERTSTATUS_PUBLIC_HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1

USER certstatus
WORKDIR /data
VOLUME /data
EXPOSE 8080
# SIGTERM (docker stop) shuts the responder and the embedded servers down in order.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s \
    CMD python3 -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"
ENTRYPOINT ["certstatus"]
CMD ["demo"]
