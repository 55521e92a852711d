# heed: SMTP policy proxy. Config and policies are mounted from volumes.
FROM python:3.11-slim

RUN useradd --system --create-home --home-dir /var/lib/heed --uid 10025 heed
WORKDIR /app
COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN pip install --no-cache-dir . && rm -rf /root/.cache
COPY config /etc/heed/config
COPY policies /etc/heed/policies

# Mount your own: -v ./config:/etc/heed/config -v ./policies:/etc/heed/policies
# Every key can also come from the environment (docs/configuration.md); with no
# HEED_REDIS__URL heed runs its embedded Redis in /var/lib/heed (keep it a volume).
VOLUME ["/etc/heed/config", "/etc/heed/policies", "/var/lib/heed"]
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HEED_SMTP__LISTEN=0.0.0.0:2525 \
    HEED_HTTP__LISTEN=0.0.0.0:8025 \
    HEED_REDIS__DATA_DIR=/var/lib/heed/redis \
    HEED_POLICIES=/etc/heed/policies \
    HEED_LOG_FORMAT=json
USER heed
EXPOSE 2525 8025
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8025/healthz', timeout=4).status == 200 else 1)"
ENTRYPOINT ["heed"]
CMD ["serve", "--config", "/etc/heed/config/heed.yaml"]
