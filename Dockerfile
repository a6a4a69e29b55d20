# The embedded endpoint (`python -m esjoin.emulator`) as an image: docker-compose.yml's `emulator` profile
# (`make up BACKEND=emulator-container`; README.md, "Backends"). One port, 4566, bound to every interface
# inside the container; compose publishes it on the host's 127.0.0.1 only.

# A tag that names one Python release (append @sha256:<digest> to pin the bytes as well). Another
# base with `python` and `pip` on PATH (a mirror's copy, or docker/offline-base.sh's stand-in where
# Docker Hub is out of reach): --build-arg PYTHON_IMAGE=..., or ESJOIN_PYTHON_IMAGE for compose.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/esjoin

# Dependencies first, at exactly the versions constraints.txt pins: this layer survives source edits.
# (The runtime dependencies only: the functions' handlers need boto3, which they bring.)
COPY pyproject.toml constraints.txt README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY lambdas ./lambdas
COPY infra ./infra
COPY esjoin ./esjoin
COPY docker/healthcheck.py docker/esjoin-bootstrap.sh ./docker/
RUN pip install --no-deps -c constraints.txt . \
    && rm -rf build ./*.egg-info

# Not root: the endpoint runs uploaded function code in its own worker processes.
RUN useradd --create-home --uid 10001 --user-group esjoin \
    && mkdir -p /home/esjoin/state \
    && chown esjoin:esjoin /home/esjoin/state
USER esjoin

ENV ESJOIN_HOST=0.0.0.0 \
    ESJOIN_PORT=4566 \
    ESJOIN_STATE_DIR=/home/esjoin/state \
    ESJOIN_BOOTSTRAP_PYTHON=python \
    ESJOIN_PROJECT_DIR=/opt/esjoin

EXPOSE 4566
HEALTHCHECK --interval=3s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/opt/esjoin/docker/healthcheck.py", "esjoin"]

# Exec form: the endpoint is PID 1's child under compose's `init: true` (tini), or PID 1 itself, and
# gets SIGTERM directly; it stops its pollers and workers and exits 0.
CMD ["python", "-m", "esjoin.emulator"]
