# Pulltab relay image: build with the dev toolchain, run as a non-root user with the data
# directory on a volume.  docker build -t pulltab . && docker run -p 2652:2652 -v pulltab-data:/data pulltab
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY src ./src
# npm ci runs "prepare", which compiles src/ to dist/.
RUN npm ci --no-audit --no-fund && npm prune --omit=dev

FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    PULLTAB_DATA_DIR=/data \
    PULLTAB_HOST=0.0.0.0 \
    PULLTAB_PORT=2652
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY docs ./docs
RUN groupadd --system --gid 2652 pulltab \
 && useradd --system --uid 2652 --gid pulltab --home-dir /data --shell /usr/sbin/nologin pulltab \
 && mkdir -p /data && chown pulltab:pulltab /data && chmod 0700 /data
USER pulltab
VOLUME ["/data"]
EXPOSE 2652
# SIGTERM (docker stop) drains gracefully; give it time (docker stop -t 30).
STOPSIGNAL SIGTERM
# /healthz on the metrics listener (127.0.0.1:9652 inside the container).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9652/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "/app/dist/cli/main.js"]
CMD ["serve"]
