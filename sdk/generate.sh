#!/bin/sh
# Regenerate the Go code for the plugin protocol (sdk/proto/...).
#
# Pinned generators (installed by this script into a private GOBIN, so the
# output does not depend on whatever is on PATH):
#   protoc-gen-go       v1.36.12   (google.golang.org/protobuf, same as go.mod)
#   protoc-gen-go-grpc  v1.6.2     (google.golang.org/grpc/cmd/protoc-gen-go-grpc)
#   protoc              3.21.12    Debian bookworm's protobuf-compiler
#                                  (apt-get install protobuf-compiler); it only
#                                  shows in the "// 	protoc v3.21.12" header
#                                  line of the generated files. A different
#                                  protoc changes that line and makes CI's
#                                  "regenerate and git diff --exit-code" fail.
#
# Usage: sdk/generate.sh   (from anywhere; the lead wires it to `make generate`)
set -eu

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
PROTOC_WANT="libprotoc 3.21.12"

sdk=$(cd "$(dirname "$0")" && pwd)
bin="${XDG_CACHE_HOME:-$HOME/.cache}/posthorn-protoc-gen/go-$PROTOC_GEN_GO_VERSION-grpc-$PROTOC_GEN_GO_GRPC_VERSION"

if ! command -v protoc >/dev/null 2>&1; then
	echo "generate.sh: protoc not found; apt-get install -y protobuf-compiler" >&2
	exit 1
fi
have=$(protoc --version)
if [ "$have" != "$PROTOC_WANT" ]; then
	echo "generate.sh: warning: $have, want $PROTOC_WANT; the version header of the generated files will differ" >&2
fi

if [ ! -x "$bin/protoc-gen-go" ] || [ ! -x "$bin/protoc-gen-go-grpc" ]; then
	mkdir -p "$bin"
	GOBIN="$bin" GOFLAGS=-mod=mod go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
	GOBIN="$bin" GOFLAGS=-mod=mod go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
fi

cd "$sdk/proto"
PATH="$bin:$PATH" protoc \
	-I . \
	--go_out=. --go_opt=paths=source_relative \
	--go-grpc_out=. --go-grpc_opt=paths=source_relative \
	posthorn/plugin/v1/plugin.proto
