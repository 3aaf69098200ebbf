# authd — multi-stage build on Debian 12 (bookworm).
#
#   docker build -t authd .
#   docker run -d --name authd --stop-timeout 30 -p 7443:7443 \
#       -v authd-data:/var/lib/authd -v /srv/authd/tls:/etc/authd/tls:ro authd
#
# TLS material is mounted at /etc/authd/tls: server.crt, server.key and the
# ca.crt the HEALTHCHECK's authctl trusts. The image runs as the user authd,
# uid:gid 10001:10001, which must be able to read them: e.g.
#
#   chown root:10001 server.key && chmod 0640 server.key   (or 10001, 0400)
#   chmod 0644 server.crt ca.crt
#
# The store and the signing key live in the /var/lib/authd volume (owned by
# 10001, mode 0700). The image never makes a signing key by itself: create
# one once (README, "Docker") or mount one with AUTHD_SIGNING_KEY.
#
# Stopping: SIGTERM makes authd drain requests in flight for up to
# AUTHD_SHUTDOWN_GRACE_MS (10 s) and exit 0. Give Docker longer than that
# before it sends SIGKILL: `docker run --stop-timeout 30`, `docker stop -t
# 30`, or `stop_grace_period: 30s` in compose.
#
# The base image name is Debian's; scripts/check-fresh.sh makes it locally
# (debootstrap + docker import) where there is no registry.

# ---- build: compilers and -dev packages, never shipped -------------------------
FROM debian:bookworm-slim AS build
# Marks this stage's (untagged) image, so that scripts/check-fresh.sh can
# remove what its builds leave behind without touching other images.
LABEL org.authd.stage=build
WORKDIR /src
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN bash scripts/install-deps.sh --build && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DAUTHD_TESTS=OFF -DAUTHD_WERROR=ON \
        -DCMAKE_INSTALL_PREFIX=/usr/local \
 && cmake --build /build -j"$(nproc)" \
 && cmake --install /build --prefix /out --strip

# ---- runtime: the shared libraries authd needs, authd and authctl --------------
FROM debian:bookworm-slim
COPY scripts/install-deps.sh /tmp/install-deps.sh
RUN bash /tmp/install-deps.sh --runtime && rm -rf /var/lib/apt/lists/* /tmp/install-deps.sh \
 && groupadd --system --gid 10001 authd \
 && useradd --system --uid 10001 --gid authd --home-dir /var/lib/authd \
        --shell /usr/sbin/nologin authd \
 && mkdir -p /var/lib/authd /etc/authd/tls && chown authd:authd /var/lib/authd \
 && chmod 0700 /var/lib/authd
COPY --from=build /out/bin/authd /out/bin/authctl /usr/local/bin/
USER authd
WORKDIR /var/lib/authd
VOLUME ["/var/lib/authd"]
# AUTHD_URL and AUTHD_CA are authctl's (the HEALTHCHECK's): the container's
# own listener. Change AUTHD_URL together with AUTHD_LISTEN.
ENV AUTHD_LISTEN=tls+tcp://0.0.0.0:7443 \
    AUTHD_DATA_DIR=/var/lib/authd/data \
    AUTHD_SIGNING_KEY=/var/lib/authd/signing.key \
    AUTHD_TLS_CERT=/etc/authd/tls/server.crt \
    AUTHD_TLS_KEY=/etc/authd/tls/server.key \
    AUTHD_SHUTDOWN_GRACE_MS=10000 \
    AUTHD_URL=tls+tcp://127.0.0.1:7443 \
    AUTHD_CA=/etc/authd/tls/ca.crt
EXPOSE 7443
STOPSIGNAL SIGTERM
# Healthy = authd answers the Health RPC over TLS on its own port.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/authctl", "--timeout", "3000", "health"]
ENTRYPOINT ["/usr/local/bin/authd"]
