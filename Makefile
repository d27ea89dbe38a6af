# Meshwork's build. `make test` is what CI runs (after scripts/deps.sh).
# meshctl is built static (CGO off): workspaces run it too, for their sftp subsystem.
SHELL := /bin/bash
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X meshwork.dev/ctl.Version=$(VERSION)
GO ?= go

.PHONY: build test lint unit bench run stop lab-clean clean

build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o bin/meshctl ./ctl/meshctl

# test: formatting, vet, staticcheck, a tidy go.mod, the race-checked tests (lab tests run as
# root), and every benchmark once for correctness.
test: lint unit
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 20m ./...

lint:
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$bad" ]; then echo "gofmt needed on:"; echo "$$bad"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	$(GO) mod tidy -diff

unit:
	$(GO) test -race -count=1 -timeout 30m ./...

# bench prints each figure beside its baseline from the same run (DESIGN.md, "Numbers").
bench:
	$(GO) test -run '^$$' -bench . -timeout 60m ./...

# run: a whole Meshwork on this machine, a workspace "dev" to ssh into (scripts/demo). One
# go build makes both binaries, sharing its work.
run:
	@echo "make run: building bin/meshctl and bin/demo (a few minutes the first time on a new machine, seconds after)"
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o bin/ ./ctl/meshctl ./scripts/demo
	scripts/run.sh

# stop: end a make run from another terminal.
stop:
	@pid=$$(cat $${MESHWORK_DIR:-/var/lib/meshwork}/demo/demo.pid 2>/dev/null) && kill $$pid && echo "stopping make run ($$pid)" || echo "no make run is up"

lab-clean:
	scripts/lab-clean.sh

clean:
	rm -rf bin
