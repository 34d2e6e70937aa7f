# Herald's two commands: `make demo` (the built-in lab, a whole cluster in network namespaces) and
# `make test` (every test, against real parts). Everything else is a step of those.
SHELL := /bin/bash
BINARIES := controller speaker heraldctl lab
GO_BUILD := CGO_ENABLED=0 go build -trimpath

.PHONY: all build $(BINARIES:%=bin/%) deps k8s-bins k8s-node-bins helm generate lint test demo demo-cluster bench test-ipvs images test-images k8s-test-bins conformance lifecycle clean
all: build

build: $(BINARIES:%=bin/%)

$(BINARIES:%=bin/%): bin/%:
	$(GO_BUILD) -o $@ ./cmd/$*

deps:
	@hack/deps.sh

k8s-bins:
	@hack/k8s-bins.sh >/dev/null

# kubelet and kube-scheduler for the lab's real nodes (lab up --kubelet, e2e/kubelet).
k8s-node-bins: k8s-bins
	@hack/k8s-node-bins.sh >/dev/null

# e2e.test, agnhost and CoreDNS for Kubernetes' own e2e tests on the lab's real nodes (heavy, once).
k8s-test-bins: k8s-bins
	@nice -n 10 hack/k8s-test-bins.sh

helm:
	@hack/helm.sh >/dev/null

generate:
	hack/generate.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	go vet ./...
	@golangci=$$(hack/golangci-lint.sh) && $$golangci run ./...

# images: e2e/kubelet installs Herald with helm from its image on real nodes.
test: deps k8s-bins k8s-node-bins k8s-test-bins helm build images test-images
	hack/test.sh

demo: deps k8s-bins helm build
	hack/demo.sh

# The demo as a user meets Herald: real nodes (kubelet, containerd, CNI), helm install from its image.
demo-cluster: deps k8s-bins k8s-node-bins helm build images
	hack/demo.sh --cluster

bench: deps k8s-bins helm build
	hack/bench.sh

test-ipvs: build
	hack/ipvs-vm/run-tests.sh

# OCI image layout tarball of the binaries, named and tagged as the Helm chart expects (no Docker).
images: build
	hack/images.sh

# The images the e2e suite and the lab's cluster DNS run (agnhost, busybox, CoreDNS): bin/test-images.
test-images: k8s-bins
	hack/test-images.sh

# Kubernetes' e2e [sig-network] Services tests against Herald and against kube-proxy, side by side.
conformance: deps k8s-bins k8s-node-bins k8s-test-bins helm build images test-images
	hack/conformance.sh

# Issue 18's events (helm upgrade, rollback, drain, kubelet stopped, ...) under live traffic on the
# lab's real nodes, with the previous release built once (hack/prev-release.sh): several minutes, so
# not a stage of make test.
lifecycle: deps k8s-bins k8s-node-bins helm build images
	HERALD_LIFECYCLE=1 HERALD_BIN_DIR=$(CURDIR)/bin HERALD_PREV_DIR=$$(hack/prev-release.sh) go test -count=1 -v -timeout 40m ./e2e/lifecycle

clean:
	rm -rf bin
