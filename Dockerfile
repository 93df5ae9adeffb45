# tff-localsgd: the reproduction suite, training, sweeps and TensorBoard in one
# image. docs/docker.md has the commands.
#
# BASE_IMAGE: the default, tensorflow/tensorflow:2.14.0-gpu, is Ubuntu 22.04
# with CUDA 11.8 and cuDNN 8.6 as system libraries, which the tensorflow 2.14
# wheel loads at run time (TensorRT is optional for TF and is not used). Its
# own Python and TensorFlow 2.14.0 are not used: the build installs python3.11
# from the distribution and a venv with the lock's tensorflow==2.14.1 (one
# wheel for CPU and GPU), so the host and the image run the same versions.
# With a GPU base no CUDA pip packages are needed; `tensorflow[and-cuda]`
# 2.14 cannot install on Python 3.11 (it pins tensorrt==8.5.3.1, which has
# no 3.11 build). Any Debian 12 or Ubuntu 22.04 base works too (the test
# builds from a bare debootstrapped Debian 12): this file installs everything
# it needs itself. Such an image runs on the CPU.
ARG BASE_IMAGE=tensorflow/tensorflow:2.14.0-gpu
FROM ${BASE_IMAGE}

# Python 3.11 with venv, CA roots for pip, tini as PID 1 (reaps the TFF
# workers' processes and forwards SIGTERM so a run stops with a checkpoint).
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates python3.11 python3.11-venv tini \
 && rm -rf /var/lib/apt/lists/*
# DL3008 (pin apt versions): the same file builds on Debian 12 and Ubuntu
# 22.04, whose package versions differ; every Python package is pinned by the
# lock instead.

# A non-root user for the default; `--user "$(id -u):$(id -g)"` works too
# (the entrypoint gives any uid a writable HOME).
RUN useradd --create-home --uid 1000 --shell /bin/bash tff \
 && mkdir -p /out && chmod 1777 /out

# The dependency layer: it depends on requirements.txt alone, so code edits
# keep it cached. The build may mount the host's CA bundle at
# /run/host-ca.crt (machines that intercept TLS); it is used, never copied.
ENV VIRTUAL_ENV=/opt/venv
COPY requirements.txt /opt/requirements.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    if [ -f /run/host-ca.crt ]; then export PIP_CERT=/run/host-ca.crt; fi \
 && python3.11 -m venv "$VIRTUAL_ENV" \
 && "$VIRTUAL_ENV/bin/pip" install --no-deps --disable-pip-version-check \
      -r /opt/requirements.txt \
 && "$VIRTUAL_ENV/bin/python" -c 'import tensorflow_federated'

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=3

WORKDIR /app
COPY conftest.py pytest.ini ./
COPY tff_localsgd/ tff_localsgd/
COPY benchmarks/ benchmarks/
COPY tests/ tests/
COPY docker/entrypoint.sh /usr/local/bin/tff-localsgd

# Provenance (last, so a new commit rebuilds only this layer): the report's
# provenance section reads these.
ARG BASE_IMAGE
ARG GIT_COMMIT=unknown
ARG IMAGE_NAME=tff-localsgd
ENV TFF_LOCALSGD_IMAGE=${IMAGE_NAME} \
    TFF_LOCALSGD_BASE_IMAGE=${BASE_IMAGE} \
    TFF_LOCALSGD_COMMIT=${GIT_COMMIT}
LABEL org.opencontainers.image.title="tff-localsgd" \
      org.opencontainers.image.description="Local SGD / FedAvg on TensorFlow Federated 0.87: reproduction suite, training, sweeps, TensorBoard" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"

USER tff
VOLUME ["/out"]
EXPOSE 6006
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/tff-localsgd"]
CMD ["reproduce", "--preset=quick"]
