#!/bin/bash
# Bootstrap the esjoin stack on the endpoint next to this script, and write its outputs.
#
# LocalStack runs it from /etc/localstack/init/ready.d/ once its services are ready (a non-zero exit
# marks the hook ERROR, and docker/healthcheck.py then never reports healthy); the emulator profile's
# one-shot `bootstrap` service runs it once the emulator is healthy. Everything it uses is an
# environment variable, so the same script runs in both containers and in the tests:
#
#   ESJOIN_BOOTSTRAP_PYTHON    a Python with boto3 (default: LocalStack's own, /opt/code/localstack/.venv/bin/python)
#   ESJOIN_BOOTSTRAP_ENDPOINT  the endpoint (default http://127.0.0.1:4566: LocalStack itself, or the
#                              emulator whose network namespace the bootstrap service shares; it is
#                              also the URL the host uses, so the outputs are valid there as written)
#   ESJOIN_PROJECT_DIR         the checkout, read-only is fine (default /opt/esjoin)
#   ESJOIN_OUTPUTS             the outputs document (default /var/lib/esjoin/outputs.json, which compose
#                              binds to the host's .esjoin/)
#   ESJOIN_STAGE, ESJOIN_REGION, ESJOIN_*   as everywhere (infra/settings.py; default local, us-east-1)
#
# Run as root (LocalStack's container), it hands the outputs file and its directory to the owner of
# the checkout, so the host user can replace them.
set -euo pipefail

python=${ESJOIN_BOOTSTRAP_PYTHON:-/opt/code/localstack/.venv/bin/python}
endpoint=${ESJOIN_BOOTSTRAP_ENDPOINT:-http://127.0.0.1:4566}
project=${ESJOIN_PROJECT_DIR:-/opt/esjoin}
outputs=${ESJOIN_OUTPUTS:-/var/lib/esjoin/outputs.json}
stage=${ESJOIN_STAGE:-local}
outputs_dir=$(dirname "$outputs")
say() { echo "esjoin-bootstrap: $*" >&2; }

if [[ ! -f "$project/infra/bootstrap.py" ]]; then
    say "no $project/infra/bootstrap.py: mount the checkout there or set ESJOIN_PROJECT_DIR"
    exit 1
fi
mkdir -p "$outputs_dir"
if [[ ! -w "$outputs_dir" ]]; then
    say "cannot write $outputs_dir as uid $(id -u) (owned by uid $(stat -c %u "$outputs_dir")); set ESJOIN_OUTPUTS"
    exit 1
fi

say "apply stage $stage on $endpoint with $python"
# From the checkout (nothing else named `infra` shadows it), without .pyc files (it may be read-only).
# The outputs document goes to the file; stdout would only repeat it in the container log.
cd "$project"
PYTHONPATH="$project${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1 \
    "$python" -m infra.bootstrap apply --endpoint "$endpoint" --stage "$stage" --outputs "$outputs" >/dev/null

if [[ $(id -u) == 0 ]]; then
    owner=$(stat -c %u:%g "$project")
    chown "$owner" "$outputs_dir" "$outputs" || say "warning: could not hand $outputs to $owner"
fi
say "stage $stage ready on $endpoint; outputs in $outputs"
