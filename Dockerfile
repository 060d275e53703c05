# likestream's image: `likestream worker` by default, `likestream gateway` with that
# argument. Built with any Docker-compatible builder, for linux/amd64 or linux/arm64:
#   docker build -t likestream:dev .
# (Not built in this repository's tests: no container engine there; tests/unit/test_k8s.py
# checks this file's agreement with the manifests and the locks instead.)
#
# Production defaults: LIKESTREAM_ENV=prod (a strong LIKESTREAM_SECRET is required, POST
# /dev/token is off) and LIKESTREAM_WEB_HOST=0.0.0.0 (a pod is reached on its own address).
# The dev overlay sets LIKESTREAM_ENV=dev; `make run` is dev and never uses the image.
#
# Supply chain: the base image by digest (python:3.11-slim's multi-platform index, as
# recorded by docker-library/repo-info; renew both FROM lines together), every Python
# package from a lock with hashes (`make lock` regenerates them; README "Scaling on
# Kubernetes").

# -- builder: the package and its locked dependencies into a venv ----------------------
FROM python:3.11-slim@sha256:90744cff8f32887f075c47d747a173ff333e9e98801667af93c357fa9f5e28ff AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The same path as in the runtime stage: a venv's scripts name their interpreter.
RUN python -m venv /opt/venv
WORKDIR /src
# Build tools first, hashed, and no build isolation afterwards: an isolated build would
# fetch its own setuptools unpinned. They build likestream, and faust-streaming from its
# sdist on arm64 (it has no arm64 wheel); removed again before the runtime stage.
COPY requirements-build.lock requirements.lock ./
RUN /opt/venv/bin/pip install --require-hashes -r requirements-build.lock \
    && /opt/venv/bin/pip install --require-hashes --no-build-isolation -r requirements.lock
# likestream/agents, tables and web are symlinks to these root directories.
COPY pyproject.toml README.md ./
COPY agents ./agents
COPY tables ./tables
COPY web ./web
COPY likestream ./likestream
# Developer tools (likestream/devtools: the embedded broker, the bench) stay out of the
# image: removed before installing, then checked absent; there `likestream broker` and
# `likestream bench` exit 2 saying so (docs/ARCHITECTURE.md#layout).
RUN rm -rf likestream/devtools \
    && /opt/venv/bin/pip install --no-deps --no-build-isolation . \
    && /opt/venv/bin/pip uninstall -y cython setuptools-scm vcs-versioning wheel \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/likestream --help > /dev/null \
    && /opt/venv/bin/python -c 'import importlib.util as u; assert not u.find_spec("likestream.devtools")'

# -- runtime: the venv, a non-root user, nothing else -------------------------------
FROM python:3.11-slim@sha256:90744cff8f32887f075c47d747a173ff333e9e98801667af93c357fa9f5e28ff
RUN groupadd --system --gid 10001 likestream \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /var/lib/likestream --shell /usr/sbin/nologin likestream \
    && install -d -o 10001 -g 10001 /var/lib/likestream
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LIKESTREAM_DATA_DIR=/var/lib/likestream \
    LIKESTREAM_ENV=prod \
    LIKESTREAM_WEB_HOST=0.0.0.0
WORKDIR /var/lib/likestream
# Numeric, so that Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 10001:10001
EXPOSE 6066
ENTRYPOINT ["likestream"]
CMD ["worker"]
