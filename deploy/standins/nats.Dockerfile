# Local stand-in for the official nats:2 image, for machines that cannot pull images (see
# deploy/compose.standins.yaml). Debian bookworm's nats-server package (2.9), started like the
# official image: the server is the entrypoint, its flags the command. Never needed where
# Docker Hub is reachable.
ARG BASE=node:24-bookworm-slim
FROM ${BASE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nats-server >/dev/null \
 && rm -rf /var/lib/apt/lists/*
EXPOSE 4222 8222
ENTRYPOINT ["/usr/sbin/nats-server"]
CMD ["--port", "4222", "--http_port", "8222"]
