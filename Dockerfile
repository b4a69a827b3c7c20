# syntax=docker/dockerfile:1
# Two stages: build a virtualenv with Debian 12's python3 (the same interpreter the distroless
# runtime ships at /usr/bin/python3), then copy only that venv into a shell-less image.

FROM debian:12-slim AS build
RUN apt-get update \
 && apt-get install --no-install-recommends --yes python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /venv \
 && /venv/bin/pip install --no-cache-dir --upgrade pip
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sidecar ./sidecar
RUN /venv/bin/pip install --no-cache-dir ".[otel]" \
 && /venv/bin/llm-sidecar --help >/dev/null

FROM gcr.io/distroless/python3-debian12:nonroot
COPY --from=build /venv /venv
# No .pyc writes (read-only root filesystem) and unbuffered JSON logs.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/venv/bin:/usr/bin:/bin
# Numeric uid/gid so runAsNonRoot can verify it without /etc/passwd lookups.
USER 65532:65532
EXPOSE 8700 8701
# The venv's console script; its #!/venv/bin/python3 shebang is run by the kernel, no shell.
ENTRYPOINT ["/venv/bin/llm-sidecar"]
CMD ["serve"]
