# authd — multi-stage build on Debian 12 (bookworm).
#
#   docker build -t authd .
#   docker run --rm -p 7443:7443 -v authd-data:/var/lib/authd \
#       -v "$PWD/var/tls:/etc/authd/tls:ro" authd
#
# The image expects TLS material in /etc/authd/tls (server.crt, server.key)
# and keeps the store and the signing key in the /var/lib/authd volume.
FROM debian:bookworm-slim AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN bash scripts/install-deps.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DAUTHD_TESTS=OFF -DAUTHD_WERROR=ON \
 && cmake --build /build -j"$(nproc)" --target authd authctl authd_client \
 && cmake --install /build --prefix /out

FROM debian:bookworm-slim
COPY scripts/install-deps.sh /tmp/install-deps.sh
RUN bash /tmp/install-deps.sh --runtime && rm -rf /var/lib/apt/lists/* /tmp/install-deps.sh \
 && useradd --system --home-dir /var/lib/authd --shell /usr/sbin/nologin authd \
 && mkdir -p /var/lib/authd /etc/authd/tls && chown authd:authd /var/lib/authd \
 && chmod 0700 /var/lib/authd
COPY --from=build /out/ /usr/local/
RUN ldconfig
USER authd
VOLUME ["/var/lib/authd"]
ENV AUTHD_LISTEN=tls+tcp://0.0.0.0:7443 \
    AUTHD_DATA_DIR=/var/lib/authd/data \
    AUTHD_SIGNING_KEY=/var/lib/authd/signing.key \
    AUTHD_TLS_CERT=/etc/authd/tls/server.crt \
    AUTHD_TLS_KEY=/etc/authd/tls/server.key
EXPOSE 7443
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/authd"]
