# The image esjoin's offline LocalStack runs Python Lambda functions in (docs/backends.md, "Offline
# image"), in place of public.ecr.aws/lambda/python:*: the Debian base docker/offline-base.sh makes
# (Debian 13, Python 3.13), AWS's runtime interface client awslambdaric and boto3. LocalStack copies its init
# (lambda_init.py, from the LocalStack image) into every container it starts from this image.
ARG BASE_IMAGE=esjoin/python-base:3.13-trixie
FROM ${BASE_IMAGE}

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 LANG=C.UTF-8 LAMBDA_TASK_ROOT=/var/task
COPY lambda-runtime.lock /tmp/lambda-runtime.lock
# The user Lambda runs handlers as (LocalStack passes it as LOCALSTACK_USER); its uid is AWS's.
RUN pip install --no-deps -r /tmp/lambda-runtime.lock \
    && rm /tmp/lambda-runtime.lock \
    && python3 -c "import awslambdaric.bootstrap, boto3" \
    && useradd --uid 993 --user-group --no-create-home --shell /usr/sbin/nologin sbx_user1051 \
    && mkdir -p /var/task /var/runtime /opt
WORKDIR /var/task
LABEL org.esjoin.role="localstack-offline lambda runtime"
