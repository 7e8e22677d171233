# shoal: multi-stage image. The builder makes a virtualenv holding shoal and its
# dependencies; the runtime copies only that venv and runs as a fixed non-root UID.
#   docker build -t shoal .
#   docker run -v /etc/shoal:/etc/shoal:ro -v shoal-state:/var/lib/shoal -p 8089:8089 shoal
# In a container set api.listen: 0.0.0.0:8089, which requires api.token_file, and
# state_dir: /var/lib/shoal (made here, owned by the image's user; a volume keeps it).

FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/shoal
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scaler ./scaler
COPY runtime ./runtime
COPY providers ./providers
COPY daemon ./daemon
# The daemon alone: no [simulate] extra (matplotlib, rich), which `shoal run` never imports.
RUN /opt/shoal/bin/pip install --no-cache-dir .

FROM python:3.11-slim AS runtime
LABEL org.opencontainers.image.title="shoal" \
      org.opencontainers.image.description="Autoscaling daemon for batch compute clusters" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
ENV PATH=/opt/shoal/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 shoal \
    && useradd --system --uid 10001 --gid shoal --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin shoal \
    && mkdir -p /etc/shoal \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/shoal
COPY --from=builder /opt/shoal /opt/shoal
USER 10001:10001
EXPOSE 8089
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8089/healthz', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["shoal"]
CMD ["run", "-c", "/etc/shoal/config.yaml"]
