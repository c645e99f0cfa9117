# Posthorn build. `make run` starts the MTA on its embedded default config;
# `make test` runs every test.
GO      ?= go
BIN     := bin
PKGS    := ./...
TESTFLAGS ?= -race -timeout 20m

.PHONY: all build install deb man run test test-short lint tidy-check check-third-party fmt vet bench bench-compare bench-smime bench-abuse generate check-generate demo clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/posthorn ./mta/cmd/posthorn
	ln -sf posthorn $(BIN)/sendmail
	$(GO) build -o $(BIN)/posthorn-notify ./plugins/notify/cmd/posthorn-notify
	$(GO) build -o $(BIN)/posthorn-smime ./plugins/smime/cmd/posthorn-smime
	$(GO) build -o $(BIN)/posthorn-pgp ./plugins/pgp/cmd/posthorn-pgp
	$(GO) build -o $(BIN)/posthorn-webmailbox ./plugins/webmailbox/cmd/posthorn-webmailbox

# install: the FHS layout (make install PREFIX=/usr DESTDIR=/tmp/stage):
# $(PREFIX)/sbin/posthorn, plugins and the sendmail link in
# $(PREFIX)/lib/posthorn, the systemd unit, sysusers.d and tmpfiles.d
# files, /etc/posthorn/posthorn.toml (kept if present), /var/spool/posthorn
# and /var/lib/posthorn.
PREFIX  ?= /usr/local
DESTDIR ?=
SBINDIR := $(PREFIX)/sbin
LIBDIR  := $(PREFIX)/lib/posthorn
SYSTEMDDIR := $(PREFIX)/lib/systemd/system
SYSUSERSDIR := $(PREFIX)/lib/sysusers.d
TMPFILESDIR := $(PREFIX)/lib/tmpfiles.d
PLUGINS := posthorn-notify posthorn-smime posthorn-pgp posthorn-webmailbox

install: build
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(SYSTEMDDIR) \
		$(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) $(DESTDIR)/etc/posthorn
	install -m 0755 $(BIN)/posthorn $(DESTDIR)$(SBINDIR)/posthorn
	ln -sf ../../sbin/posthorn $(DESTDIR)$(LIBDIR)/sendmail
	for p in $(PLUGINS); do install -m 0755 $(BIN)/$$p $(DESTDIR)$(LIBDIR)/$$p; done
	sed 's|/usr/sbin/posthorn|$(SBINDIR)/posthorn|g' dist/systemd/posthorn.service > $(DESTDIR)$(SYSTEMDDIR)/posthorn.service
	chmod 0644 $(DESTDIR)$(SYSTEMDDIR)/posthorn.service
	install -m 0644 dist/sysusers.d/posthorn.conf $(DESTDIR)$(SYSUSERSDIR)/posthorn.conf
	install -m 0644 dist/tmpfiles.d/posthorn.conf $(DESTDIR)$(TMPFILESDIR)/posthorn.conf
	[ -e $(DESTDIR)/etc/posthorn/posthorn.toml ] || install -m 0640 dist/posthorn.toml $(DESTDIR)/etc/posthorn/posthorn.toml
	install -d $(DESTDIR)$(PREFIX)/share/man/man8 $(DESTDIR)$(PREFIX)/share/man/man5
	install -m 0644 docs/man/posthorn.8 $(DESTDIR)$(PREFIX)/share/man/man8/posthorn.8
	install -m 0644 docs/man/posthorn.toml.5 $(DESTDIR)$(PREFIX)/share/man/man5/posthorn.toml.5
	install -d -m 0755 $(DESTDIR)/var/spool/posthorn
	install -d -m 0750 $(DESTDIR)/var/lib/posthorn

# deb: a Debian package of the install above (dpkg-deb); its postinst
# creates the user (systemd-sysusers, else useradd) and the directories
# (systemd-tmpfiles, else by hand).
DEB_VERSION ?= 0.0~git$(shell git rev-parse --short HEAD 2>/dev/null || echo 0)
DEB_ARCH    ?= $(shell dpkg --print-architecture 2>/dev/null || $(GO) env GOARCH)
deb:
	rm -rf $(BIN)/deb
	$(MAKE) install PREFIX=/usr DESTDIR=$(CURDIR)/$(BIN)/deb
	install -d $(BIN)/deb/DEBIAN
	sed -e 's/@VERSION@/$(DEB_VERSION)/' -e 's/@ARCH@/$(DEB_ARCH)/' dist/debian/control > $(BIN)/deb/DEBIAN/control
	install -m 0644 dist/debian/conffiles $(BIN)/deb/DEBIAN/conffiles
	install -m 0755 dist/debian/postinst $(BIN)/deb/DEBIAN/postinst
	dpkg-deb --root-owner-group --build $(BIN)/deb $(BIN)/posthorn_$(DEB_VERSION)_$(DEB_ARCH).deb

# man: the man pages, from the same text as --help and config default
# (committed; a test checks they are current).
man:
	@mkdir -p docs/man
	$(GO) run ./mta/cmd/posthorn man posthorn.8 > docs/man/posthorn.8
	$(GO) run ./mta/cmd/posthorn man posthorn.toml.5 > docs/man/posthorn.toml.5

run: build
	./$(BIN)/posthorn serve

# The SDK is its own module (sdk/go.mod): every target covers both.
test: lint
	$(GO) test $(TESTFLAGS) $(PKGS)
	cd sdk && $(GO) test $(TESTFLAGS) ./...
	cd third_party/go-smtp && $(GO) test $(TESTFLAGS) .

test-short:
	$(GO) test -short $(PKGS)
	cd sdk && $(GO) test -short ./...

STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2

# third_party/ holds upstream code as it is (plus our patches): it is
# left out of gofmt here, and staticcheck and vet never see it (its own
# module, which ./... does not enter); check-third-party keeps it honest.
GOFILES = $$(git ls-files '*.go' | grep -v -e '\.pb\.go$$' -e '^third_party/')

lint: vet tidy-check check-third-party
	@out=$$(gofmt -l $(GOFILES)); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(STATICCHECK) ./...
	cd sdk && $(STATICCHECK) ./...

vet:
	$(GO) vet $(PKGS)
	cd sdk && $(GO) vet ./...
	CGO_ENABLED=0 $(GO) vet ./plugins/smime/...   # the build without cgo (no OpenSSL signer) too

# tidy-check: go mod tidy must leave both modules' go.mod and go.sum as
# committed.
tidy-check:
	@t=$$(mktemp -d); trap 'rm -rf $$t' EXIT; for m in . sdk; do \
		cp $$m/go.mod $$m/go.sum $$t/; \
		(cd $$m && $(GO) mod tidy) || exit 1; \
		if ! cmp -s $$m/go.mod $$t/go.mod || ! cmp -s $$m/go.sum $$t/go.sum; then \
			cp $$t/go.mod $$t/go.sum $$m/; \
			echo "go mod tidy changes $$m/go.mod or $$m/go.sum: run it there and commit"; exit 1; \
		fi; \
	done

# check-third-party: third_party/go-smtp must be upstream v0.26.0 from the
# Go module cache plus third_party/patches/go-smtp/*.patch, nothing else
# (third_party/go-smtp/POSTHORN.md says what is patched and why).
check-third-party:
	sh third_party/check.sh

fmt:
	gofmt -w $(GOFILES)

# bench: the end-to-end load test (N messages of S KB over C sessions into
# a real posthorn delivering to Maildir), then the package benchmarks.
BENCH_N ?= 5000
BENCH_S ?= 10
BENCH_C ?= 20
BENCH_QUEUE_N ?= 100000
bench: build
	$(GO) run ./testbed/cmd/bench -posthorn $(BIN)/posthorn -n $(BENCH_N) -size $(BENCH_S) -c $(BENCH_C)
	$(GO) test -run '^$$' -bench Enqueue -benchtime 2000x ./queue/
	$(GO) test -run '^$$' -bench . -benchtime 2000x ./mta/internal/maildir/
	$(GO) test -run '^$$' -bench 'QueueScale|Recover$$' -benchtime 1x ./queue/ -args -queue-scale-n=$(BENCH_QUEUE_N) -queue-recover-n=$(BENCH_QUEUE_N)
	$(GO) test -run '^$$' -bench 'Protect|Path100KB' -benchtime 5x ./plugins/smime/
	$(GO) test -run '^$$' -bench DirectoryRCPT1M -benchtime 50000x ./mta/internal/directory/
	$(GO) test -run '^$$' -bench DirectoryOpen -benchtime 200x ./mta/internal/directory/

# bench-compare: issue 19's side-by-side run of a private Postfix and
# posthorn, both relaying to one local sink, interleaved, BENCH_REPS
# repetitions, median/min/max of msgs/s, CPU ms/msg and peak PSS plus the
# ratio. BENCH_SCALE < 1 sends fewer messages. One message per
# connection (as smtp-source sends); BENCH_FLAGS=-reuse for many per
# session. Needs Debian's postfix.
# Not part of `make test`; meaningful only on an idle machine.
BENCH_REPS ?= 3
BENCH_SCALE ?= 1
BENCH_WORKLOADS ?=
BENCH_FLAGS ?=
bench-compare: build
	$(GO) run ./testbed/cmd/benchcompare -posthorn $(BIN)/posthorn -reps $(BENCH_REPS) -scale $(BENCH_SCALE) -workloads '$(BENCH_WORKLOADS)' $(BENCH_FLAGS)

# bench-smime: issue 19.4's S/MIME cost through the daemon: posthorn
# relaying 100 KB messages to the sink, and the same with the smime plugin
# signing and encrypting every one (RSA 2048), interleaved; prints the CPU
# added per message. Builds posthorn-smime. Not part of `make test`.
# BENCH_FLAGS="-smime-key ec" for P-256 identities (ECDSA, ECDH).
# Each repetition runs unpaced (loadgen as fast as posthorn accepts: with
# S/MIME acceptance outruns delivery and the spool backs up) and then both
# runs paced at 0.6 x the lower unpaced end-to-end rate of that repetition
# (rows "paced at R/s": no backlog; each message wakes the processes on
# its own, so paced CPU per message is higher for both). BENCH_FLAGS=
# "-rate N" paces at N msgs/s (A/B of two builds: the same N), "-rate 0"
# runs unpaced only.
bench-smime: build
	$(GO) run ./testbed/cmd/benchcompare -posthorn $(BIN)/posthorn -smime -reps $(BENCH_REPS) -scale $(BENCH_SCALE) $(BENCH_FLAGS)

# bench-abuse: the floods of issue 20 against a real posthorn: 100 AUTH
# guessers from 5 addresses while the real user logs in from another, then
# 200 clients trickling a byte a second; prints the daemon's RSS, the
# login latency and the session counts. Not part of `make test` (whose
# testbed/abuse TestFloods holds the same figures to the issue's limits).
ABUSE_D ?= 20s
bench-abuse: build
	$(GO) run ./testbed/cmd/abuse -posthorn $(BIN)/posthorn -d $(ABUSE_D)

# demo: the testbed's fake internet and posthorn; one message per TLS level.
demo:
	$(GO) run ./testbed/cmd/demo

# generate: regenerate the plugin protocol's Go code (committed).
generate:
	sh sdk/generate.sh

# check-generate: CI's proof that the committed generated code is current.
check-generate: generate
	git diff --exit-code -- sdk/proto || { echo "generated code is stale: run make generate and commit"; exit 1; }

clean:
	rm -rf $(BIN) var
