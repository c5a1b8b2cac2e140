# The sidecar (and `agent-sidecar demo`) as a small image. Built by docker-compose.yml; run as the
# native sidecar in deploy/kubernetes/. It runs with a read-only root filesystem: at run time the
# sidecar writes nothing but its Unix socket, in the /run/agent-sidecar volume, and its window
# snapshot, in the /var/lib/agent-sidecar volume.
FROM python:3.11-slim

# pip compiles the bytecode at build time; at run time the root filesystem may be read-only.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY sidecar ./sidecar
# A fixed uid/gid (10001): Kubernetes' runAsNonRoot can only verify a numeric USER, and
# deploy/kubernetes sets runAsUser/runAsGroup/fsGroup to the same numbers.
RUN pip install --no-cache-dir . \
 && groupadd --system --gid 10001 sidecar \
 && useradd --system --uid 10001 --gid 10001 --no-create-home sidecar \
 && install -d -o sidecar -g sidecar -m 0770 /run/agent-sidecar \
 && install -d -o sidecar -g sidecar -m 0770 /var/lib/agent-sidecar
# The container config (HTTP on all interfaces, socket in the volume), so a bare `docker run` works;
# compose and Kubernetes mount their own file over it.
COPY docker/sidecar.yaml /etc/agent-sidecar/sidecar.yaml

USER 10001:10001
EXPOSE 8765
# Writable even under `docker run --read-only`: a fresh volume here takes the directory's owner.
# /run/agent-sidecar: the socket; /var/lib/agent-sidecar: the window snapshot (keep it across restarts).
VOLUME ["/run/agent-sidecar", "/var/lib/agent-sidecar"]
# /readyz: healthy once every listener takes events (compose's demo waits for it). The demo
# service runs this image too and disables the check (it serves no HTTP).
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=12 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8765/readyz', timeout=2)"]
ENTRYPOINT ["agent-sidecar"]
CMD ["run", "--config", "/etc/agent-sidecar/sidecar.yaml"]
