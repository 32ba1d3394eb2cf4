# Local stand-in for the official postgres:16 image, for machines that cannot pull images (see
# deploy/compose.standins.yaml): Debian bookworm's PostgreSQL (15), with an entrypoint that
# honours the part of the official image's interface that deploy/compose.yaml uses:
# POSTGRES_USER, POSTGRES_DB, POSTGRES_PASSWORD_FILE (read as root), PGDATA on
# /var/lib/postgresql/data, scram-sha-256 for connections over the network, pg_isready.
# Never needed where Docker Hub is reachable.
ARG BASE=node:24-bookworm-slim
FROM ${BASE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null \
 && rm -rf /var/lib/apt/lists/*
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
