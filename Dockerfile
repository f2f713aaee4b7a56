# lb's container image: a static binary on an empty base, run as a non-root user.
#
#   podman build -t lb .                                  # builds lb in a Go image, then the runtime image
#   podman build --target local --build-arg BINARY=lb-v1.2.0-linux-amd64 -t lb -f Dockerfile dist/
#                                                         # packs a binary of deploy/release.sh (no registry pull)
#
# Both targets share the runtime stage: entrypoint, user, ports and labels.
# VERSION, COMMIT and DATE stamp both the binary (lb --version) and the labels.
ARG VERSION=dev
ARG COMMIT=unknown
ARG DATE=unknown

FROM scratch AS runtime
ARG VERSION
ARG COMMIT
ARG DATE
LABEL org.opencontainers.image.title="lb" \
      org.opencontainers.image.description="Layer-4 TCP load balancer that sniffs HTTP (epoll + splice)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.created="${DATE}"
# 65532 is distroless's "nonroot"; scratch has no /etc/passwd, so the user is numeric.
USER 65532:65532
# 7777: the listener; 9090: the metrics listener (/metrics, /healthz, /readyz; no token, nothing
# else). The admin API is off unless --admin-listen (and --admin-token) are given.
EXPOSE 7777 9090
ENTRYPOINT ["/lb"]
CMD ["serve", "--servers", "/etc/lb/servers.txt", "--listen", ":7777", "--metrics-listen", ":9090", "--log-format", "json"]

# local: the runtime image around a binary built beforehand, e.g. by deploy/release.sh.
FROM runtime AS local
ARG BINARY=lb
COPY ${BINARY} /lb

FROM docker.io/library/golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION
ARG COMMIT
ARG DATE
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X lb/version.version=${VERSION} -X lb/version.commit=${COMMIT} -X lb/version.date=${DATE}" \
      -o /out/lb ./cmd/lb

# image (the default target): lb built from this tree.
FROM runtime AS image
COPY --from=build /out/lb /lb
