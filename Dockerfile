# The gateway image (also the relay's and migrate's: the command picks). The wheels are built
# in a throwaway stage; the final image holds a slim Python, tini, the wheels' runtime
# dependencies and config/, and runs as an unprivileged user. tini (PID 1) passes SIGTERM on
# to the gateway, which drains (docs/operations.md), and reaps what it should.
# Checked without a Docker engine by tests/ship/test_container.py.
FROM python:3.12-slim AS build
WORKDIR /src
COPY setup.py pyproject.toml README.md ./
COPY tornado_gw ./tornado_gw
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
RUN apt-get update \
 && apt-get install --yes --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --uid 10001 --shell /usr/sbin/nologin gateway
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels tornado_gw && rm -rf /wheels
WORKDIR /app
COPY config ./config
USER gateway
ENV PYTHONUNBUFFERED=1 WSGATEWAY_PORT=8081
EXPOSE 8081
# /health is liveness: 200 while the process serves, even when degraded (docs/operations.md).
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ['WSGATEWAY_PORT'], timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--", "python", "-m", "tornado_gw"]
CMD ["serve"]
