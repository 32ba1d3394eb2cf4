# Pulltab relay image: build with the dev toolchain, run as a non-root user with the data
# directory on a volume.  docker build -t pulltab . && docker run -p 2652:2652 -v pulltab-data:/data pulltab
# Node 24 LTS (the line the test suite runs on besides 20); --build-arg NODE_MAJOR picks
# another (26 is not supported yet: README.md). scripts/docker-check.sh builds and checks it.
ARG NODE_MAJOR=24

FROM node:${NODE_MAJOR}-bookworm-slim AS build
WORKDIR /app
# Dependencies first, in their own layer, so that a change to src/ does not reinstall them.
# --ignore-scripts: "prepare" needs src/, compiled below; lmdb and msgpackr-extract load
# their prebuilt binaries (N-API on Node 24) without an install step.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
# Compile, then keep only what `pulltab serve` runs: production dependencies, JavaScript
# (no type declarations, TypeScript sources or source maps, here or in node_modules: 11 of
# its 28 MB), and of the native modules only the builds this Node loads (glibc, its ABI or
# N-API; not musl, not other Node ABIs).
RUN npx tsc -p tsconfig.build.json \
 && npm prune --omit=dev --no-audit --no-fund \
 && find dist node_modules -type f \( -name '*.map' -o -name '*.ts' -o -name '*.d.cts' -o -name '*.d.mts' \) -delete \
 && find node_modules -type d -empty -delete \
 && abi=$(node -p process.versions.modules) \
 && find node_modules/@lmdb node_modules/@msgpackr-extract -name '*.node' \
      ! -name "node.abi$abi.glibc.node" ! -name 'node.napi.glibc.node' -delete \
 && node -e "import('lmdb').then(() => console.log('lmdb loads on node', process.version))"

FROM node:${NODE_MAJOR}-bookworm-slim
# In a container the metrics listener binds all of the container's interfaces: its loopback
# is unreachable from the host and from a Prometheus in another container. Publish it to the
# host's loopback only (-p 127.0.0.1:9652:9652); it needs no credentials.
ENV NODE_ENV=production \
    PULLTAB_DATA_DIR=/data \
    PULLTAB_HOST=0.0.0.0 \
    PULLTAB_PORT=2652 \
    PULLTAB_METRICS_HOST=0.0.0.0 \
    PULLTAB_METRICS_PORT=9652
RUN groupadd --system --gid 2652 pulltab \
 && useradd --system --uid 2652 --gid pulltab --home-dir /data --shell /usr/sbin/nologin pulltab \
 && mkdir -p /data && chown pulltab:pulltab /data && chmod 0700 /data
WORKDIR /app
# Owned by root: the relay's user can read its code but not change it.
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
USER pulltab
VOLUME ["/data"]
EXPOSE 2652 9652
# SIGTERM (docker stop) drains gracefully within 15 s at most; docker stop's default 10 s
# may cut a long drain short, so give it time (docker stop -t 30).
STOPSIGNAL SIGTERM
# /healthz on the metrics listener, on whatever PULLTAB_METRICS_PORT says. With the listener
# turned off (-1) the check fails: run such a container with --no-healthcheck.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PULLTAB_METRICS_PORT || 9652) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "/app/dist/cli/main.js"]
CMD ["serve"]
