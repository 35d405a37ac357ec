# i2v-gateway: the gateway and its job runner (hosted providers). The local GPU engine
# needs a CUDA base image and the `local` extra; see docs/configuration.md.
#
# It listens on 0.0.0.0, so it will not start without an API key. Make one first (printed once):
#   docker run --rm -v i2v:/data IMAGE i2v-gateway keys create --name me --admin
#   docker run -d -v i2v:/data -p 8000:8000 IMAGE
# (or pass -e I2V_API_KEYS='["<a long random key>"]').
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY adapters ./adapters
COPY media ./media
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 i2v && mkdir -p /data && chown i2v /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /app
COPY router_rules.yaml ./
USER i2v
ENV I2V_HOST=0.0.0.0 I2V_PORT=8000 I2V_DATA_DIR=/data I2V_RULES_FILE=/app/router_rules.yaml
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"
CMD ["i2v-gateway", "serve"]
