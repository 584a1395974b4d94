# The replicator image: `docker build -t cdc-replicator .` then `docker run cdc-replicator run`.
#
# NOT EXERCISED BY OUR TESTS: no container engine runs where the suite runs. It is used by
# deploy/compose and deploy/k8s and checked offline by tests/unit/test_deploy_files.py (every
# file it copies exists, it runs as a non-root user, the exposed port is the metrics port).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY replicator ./replicator
# gcc only while pip compiles the per-event modules (mypyc, setup.py); without it they run as Python.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install . \
    && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* \
    && python -c 'import replicator.compiled as c; print("per-event modules:", c.state())' \
    && useradd --system --uid 10001 --home-dir /app replicator
# The shipped mapping spec and connector configs (a deployment mounts its own over them).
COPY mappings ./mappings
COPY connectors ./connectors

USER 10001
ENV REPLICATOR_MAPPING=/app/mappings/demo.yaml \
    REPLICATOR_METRICS__PORT=9108 \
    REPLICATOR_LOG_FORMAT=json
EXPOSE 9108
ENTRYPOINT ["replicator"]
CMD ["run"]
