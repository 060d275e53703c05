# likestream's image: `likestream worker` by default, `likestream gateway` with that
# argument. Built with any Docker-compatible builder:
#   docker build -t likestream:dev .
# (Not built in this repository's tests: no container engine there; tests/unit/test_k8s.py
# checks this file's agreement with the manifests instead.)

# -- builder: the package and its dependencies into a venv ----------------------------
FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The same path as in the runtime stage: a venv's scripts name their interpreter.
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first, so that a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir likestream && touch likestream/__init__.py \
    && /opt/venv/bin/pip install . \
    && /opt/venv/bin/pip uninstall -y likestream \
    && rm -rf build likestream.egg-info likestream
# likestream/agents, tables and web are symlinks to these root directories.
COPY agents ./agents
COPY tables ./tables
COPY web ./web
COPY likestream ./likestream
RUN /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/likestream --help > /dev/null

# -- runtime: the venv, a non-root user, nothing else -------------------------------
FROM python:3.11-slim
RUN groupadd --system --gid 10001 likestream \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /var/lib/likestream --shell /usr/sbin/nologin likestream \
    && install -d -o 10001 -g 10001 /var/lib/likestream
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LIKESTREAM_DATA_DIR=/var/lib/likestream
WORKDIR /var/lib/likestream
# Numeric, so that Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 10001:10001
EXPOSE 6066
ENTRYPOINT ["likestream"]
CMD ["worker"]
