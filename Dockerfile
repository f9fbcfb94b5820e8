# syntax=docker/dockerfile:1
# The kith image: one static binary on distroless, as uid 65532 (nonroot). The server's StatefulSet runs it
# as that user; the agent's DaemonSet overrides runAsUser to 0 (deploy/kubernetes/base/agent.yaml says why).
#
#   docker build -t ghcr.io/kithid/kith:dev .
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/kith ./cmd/kith

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/kith /usr/local/bin/kith
USER 65532:65532
# server: 8081 agent API (gRPC, mTLS), 8080 health, metrics, bundle
EXPOSE 8081 8080
ENTRYPOINT ["/usr/local/bin/kith"]
