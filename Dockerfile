# One image for every tack service; compose.yaml picks the module each container runs.
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/tack
COPY pyproject.toml README.md requirements-runtime.lock ./
RUN /opt/tack/bin/pip install --no-cache-dir --require-hashes -r requirements-runtime.lock
COPY tack_common ./tack_common
COPY tack_provider_kit ./tack_provider_kit
COPY tack_provider_stub ./tack_provider_stub
COPY tack_provider_buildkite ./tack_provider_buildkite
COPY tack_provider_tekton ./tack_provider_tekton
COPY tack_provider_sourcehut ./tack_provider_sourcehut
COPY tack_control ./tack_control
COPY tack_sandbox ./tack_sandbox
RUN /opt/tack/bin/pip install --no-cache-dir --no-deps --no-build-isolation .

FROM python:3.11-slim
# git loads .tangled/workflows from knots (Debian 12's 2.39 is the oldest tack supports).
RUN apt-get update && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin tack \
    && mkdir -p /data && chown tack /data
COPY --from=build /opt/tack /opt/tack
ENV PATH=/opt/tack/bin:$PATH PYTHONUNBUFFERED=1
WORKDIR /data
VOLUME /data
USER tack
EXPOSE 8080
CMD ["python", "-m", "tack_control"]
