# pinserver: the pin service under gunicorn. Holds no private key.
#   docker build -t pinserver .
#   docker run -v pinserver-data:/data pinserver init --root /data/root-1.json --data /data
#   docker run -p 8080:8080 -v pinserver-data:/data pinserver
FROM python:3.12-slim-bookworm AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY pinserver ./pinserver
RUN python -m venv /venv \
 && /venv/bin/pip install --no-compile ".[postgres]" \
 && /venv/bin/python -m compileall -q /venv/lib

FROM python:3.12-slim-bookworm
LABEL org.opencontainers.image.title="pinserver" \
      org.opencontainers.image.description="Signed pin-configuration service for TLS certificate pinning"
RUN groupadd --system --gid 10001 pinserver \
 && useradd --system --uid 10001 --gid pinserver --home-dir /data --shell /usr/sbin/nologin pinserver \
 && mkdir /data && chown pinserver:pinserver /data
COPY --from=build /venv /venv
ENV PATH=/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PINSERVER_DATA=/data \
    PINSERVER_HEALTH_URL=http://127.0.0.1:8080/healthz
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(os.environ['PINSERVER_HEALTH_URL'], timeout=4).status == 200 else 1)"]
ENTRYPOINT ["pinserver"]
CMD ["serve", "--data", "/data", "--bind", "0.0.0.0:8080"]
