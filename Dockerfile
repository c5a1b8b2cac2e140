# The sidecar (and `agent-sidecar demo`) as a small image. Built by docker-compose.yml.
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml README.md ./
COPY sidecar ./sidecar
RUN pip install --no-cache-dir . \
 && useradd --system --uid 10001 --no-create-home sidecar \
 && install -d -o sidecar -g sidecar -m 0770 /run/agent-sidecar

USER sidecar
EXPOSE 8765
ENTRYPOINT ["agent-sidecar"]
CMD ["run", "--config", "/etc/agent-sidecar/sidecar.yaml"]
