# syntax=docker/dockerfile:1
# kube-agent-guard: `make image` (IMAGE=agent-guard:<version>). Two stages: the first builds a
# virtualenv with the project and its dependencies (all of them ship wheels, so no compiler is
# needed); the final stage is the slim Python base plus that virtualenv, run as a non-root user,
# with pip and setuptools removed. Runs with a read-only root filesystem.
# 3.11 (the project's minimum) is also Debian bookworm's Python: where no registry is reachable, the
# real-node suite builds this file unchanged on a local stand-in for python:3.11-slim made from Debian
# packages (docs/testing.md). `--build-arg PYTHON_VERSION=3.12` builds on a newer base.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY webhook ./webhook
RUN python -m venv /opt/agent-guard \
 && /opt/agent-guard/bin/pip install --no-compile . \
 && /opt/agent-guard/bin/pip uninstall --yes pip setuptools wheel \
 && /opt/agent-guard/bin/python -m compileall -q /opt/agent-guard/lib

FROM python:${PYTHON_VERSION}-slim
LABEL org.opencontainers.image.title="kube-agent-guard" \
      org.opencontainers.image.description="Validating admission webhook that keeps LLM agents from harming a Kubernetes cluster" \
      org.opencontainers.image.licenses="Apache-2.0"
# No pip in the final image either: nothing is installed at run time.
RUN python -m pip uninstall --yes --root-user-action=ignore pip setuptools wheel 2>/dev/null; \
    groupadd --system --gid 65532 agent-guard \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin agent-guard
COPY --from=build /opt/agent-guard /opt/agent-guard
# The shipped policy, for `docker run`; in a cluster the ConfigMap is mounted over it.
COPY rules /etc/agent-guard/policy
ENV PATH=/opt/agent-guard/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["agent-guard", "serve"]
CMD ["--cert-dir", "/etc/agent-guard/tls", "--rules", "/etc/agent-guard/policy"]
