# Kith — make targets. `make test` is what CI runs (.ci/run).
GO        ?= go
BUF       := $(GO) tool -modfile=tools/buf/go.mod buf
BIN       := bin/kith
PKGS      := ./...
E2E_TAGS  := e2e

.PHONY: build test test-unit test-e2e test-k8s test-upstream test-postgres test-oidc test-federation test-browser check-generate check-tidy bench demo generate lint clean

# Stamp the VCS revision into the binary (kith version) when building from a git checkout.
BUILDVCS  := $(shell git rev-parse --git-dir >/dev/null 2>&1 && echo auto || echo false)

build:
	CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=$(BUILDVCS) -o $(BIN) ./cmd/kith

# Everything CI runs: generated code is up to date, vet + staticcheck, unit and component tests,
# then the end-to-end suites that start the real binary.
test: check-tidy check-generate lint test-unit test-e2e test-k8s test-upstream test-postgres test-oidc test-federation test-browser

test-unit:
	$(GO) test -count=1 $(PKGS)

test-e2e: build
	KITH_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -tags $(E2E_TAGS) ./test/e2e/...

# The tests against a real kube-apiserver and etcd (build tag k8s, tests named TestK8s*): the script builds
# both once from the Go module proxy into ~/.cache/kith-test (tens of minutes cold) and prints that directory;
# helm.sh builds helm for the chart's tests (deploy/) the same way.
K8S_PKGS  = $(shell grep -rl --include='*_test.go' '^//go:build k8s' . | xargs -n1 dirname | sort -u)
test-k8s: build
	@assets="$$(./scripts/components/kube.sh)" && helm="$$(./scripts/components/helm.sh)" && \
	KUBEBUILDER_ASSETS="$$assets" KITH_HELM="$$helm" KITH_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -tags k8s -run '^TestK8s' $(K8S_PKGS)

# The tests against a real step-ca and Vault dev server (build tag upstream; the ones that start the kith
# binary also carry e2e): the scripts build step-ca, step and Vault once from the Go module proxy into
# ~/.cache/kith-test (Vault ≈ 15 minutes cold on 2 cores) and print that directory. Vault's Kubernetes auth
# test (tags upstream and k8s) reviews tokens with the kube-apiserver of make test-k8s.
UPSTREAM_PKGS = $(shell grep -rl --include='*_test.go' '^//go:build.*upstream' . | xargs -n1 dirname | sort -u)
test-upstream: build
	@./scripts/components/stepca.sh >/dev/null && ./scripts/components/vault.sh >/dev/null && assets="$$(./scripts/components/kube.sh)" && \
	KUBEBUILDER_ASSETS="$$assets" KITH_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -tags 'upstream e2e k8s' -run '^Test(Step|Vault|Disk|Upstream)' $(UPSTREAM_PKGS)
# The tests against a real PostgreSQL (build tag postgres): the script installs it from the distribution when
# missing (apt-get, as root) and prints its bin directory; each test package starts throwaway clusters
# (initdb + pg_ctl on a temp dir, unix socket, fsync off) as an unprivileged user. The e2e tests tagged
# postgres start several servers on one database and need the binary.
POSTGRES_PKGS = $(shell grep -rl --include='*_test.go' '^//go:build postgres' . | xargs -n1 dirname | sort -u)
test-postgres: build
	@bin="$$(./scripts/components/postgres.sh)" && \
	KITH_POSTGRES_BIN="$$bin" $(GO) test -count=1 -tags postgres $(POSTGRES_PKGS) && \
	KITH_POSTGRES_BIN="$$bin" KITH_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -tags $(E2E_TAGS),postgres -run '^TestPostgres' ./test/e2e/...

# Logins through a real OpenID provider (build tag oidc): zitadel/oidc's example provider, built once from the
# Go module proxy into ~/.cache/kith-test (a minute or two cold) by scripts/components/oidc.sh.
test-oidc: build
	@provider="$$(./scripts/components/oidc.sh)" && \
	KITH_OIDC_PROVIDER="$$provider" KITH_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -tags 'e2e oidc' -run '^TestOIDC' ./test/e2e/...

# Federation with a real SPIRE 1.13 server (build tags e2e,federation, tests named TestSPIRE*): spire.sh builds
# spire-server once from the Go module proxy (cgo: needs gcc; ≈ 8 min cold on 2 cores) into ~/.cache/kith-test.
test-federation: build
	@spire="$$(./scripts/components/spire.sh)" && \
	KITH_SPIRE="$$spire" KITH_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -tags e2e,federation -run '^TestSPIRE' ./test/e2e/...

# The web console in real headless Chromium (build tag browser, tests named TestBrowser*): chromium.sh installs
# Debian's chromium package when it is missing (about 5 minutes cold) and prints the binary; screenshots of each
# page land in the test's artifact directory (KITH_UPDATE_SCREENSHOTS=1 also refreshes docs/console-*.png).
test-browser: build
	@mkdir -p $(CURDIR)/bin/test-artifacts && chromium="$$(./scripts/components/chromium.sh)" && \
	KITH_CHROMIUM="$$chromium" KITH_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -tags 'e2e browser' -run '^TestBrowser' -artifacts -outputdir=$(CURDIR)/bin/test-artifacts ./test/e2e/

# go.mod lists exactly what the code needs, direct requirements as direct.
check-tidy:
	@$(GO) mod tidy -diff || (echo "go.mod/go.sum are not tidy: run go mod tidy and commit" >&2; exit 1)

# `make generate` on a clean tree must change nothing.
check-generate: generate
	@git diff --exit-code -- api/ || (echo "generated code is stale: run make generate and commit" >&2; exit 1)
	@test -z "$$(git status --porcelain -- api/)" || (git status --porcelain -- api/; echo "make generate produced untracked files" >&2; exit 1)

generate:
	$(BUF) generate

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt would change these files: run gofmt -w" >&2; exit 1)
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)

bench:
	./bench/run.sh

# make demo UPSTREAM=step runs it under a step-ca built by scripts/components/stepca.sh (cached); UPSTREAM=vault
# under a Vault dev server built by scripts/components/vault.sh (cached; it takes a while to build cold).
demo: build
	KITH_DEMO_UPSTREAM=$(UPSTREAM) ./scripts/demo.sh

clean:
	rm -rf bin
