#!/bin/sh
# check.sh: third_party/go-smtp must be upstream go-smtp $VERSION (from the
# Go module cache, its hash checked) with third_party/patches/go-smtp/*.patch
# applied in order, and nothing else (POSTHORN.md aside). Run by
# `make check-third-party` (part of `make lint` and `make test`).
#
# check.sh -update rewrites the patches from the tree after a deliberate
# change: 0001 is the code, 0002 the tests (*_test.go and testdata/).
set -eu
cd "$(dirname "$0")/.."

MODULE=github.com/emersion/go-smtp
VERSION=v0.26.0
SUM='h1:+f4S1F/F9uQkkODeJQFaWvF8fDeVKE+SsJtAj0XxKp0='
TREE=third_party/go-smtp
PATCHES=third_party/patches/go-smtp

json=$(GOFLAGS=-mod=mod go mod download -json "$MODULE@$VERSION")
dir=$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
sum=$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Sum": "\(.*\)",$/\1/p')
if [ "$sum" != "$SUM" ] || [ ! -d "$dir" ]; then
	echo "check.sh: $MODULE@$VERSION: want $SUM in the module cache, got '$sum' at '$dir'" >&2
	exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -R "$dir" "$tmp/upstream"
chmod -R u+w "$tmp/upstream"

if [ "${1:-}" = "-update" ]; then
	# Both sides once without the tests, once with only the tests.
	mkdir "$tmp/code" "$tmp/tests"
	for side in upstream posthorn; do
		src="$tmp/upstream"
		[ "$side" = posthorn ] && src="$TREE"
		cp -R "$src" "$tmp/code/$side"
		chmod -R u+w "$tmp/code/$side"
		rm -f "$tmp/code/$side/POSTHORN.md"
		mkdir -p "$tmp/tests/$side"
		(cd "$tmp/code/$side" && find . \( -name '*_test.go' -o -path './testdata/*' \) -type f) |
			while read -r f; do
				mkdir -p "$tmp/tests/$side/$(dirname "$f")"
				mv "$tmp/code/$side/$f" "$tmp/tests/$side/$f"
			done
	done
	rm -f "$PATCHES"/*.patch
	mkdir -p "$PATCHES"
	(cd "$tmp/code" && git diff --no-index upstream posthorn) >"$PATCHES/0001-data-reader.patch" || true
	(cd "$tmp/tests" && git diff --no-index upstream posthorn) >"$PATCHES/0002-data-reader-tests.patch" || true
	for p in "$PATCHES"/*.patch; do [ -s "$p" ] || rm -f "$p"; done
	echo "check.sh: wrote $(ls "$PATCHES")"
	exec "$0"
fi

for p in "$PATCHES"/*.patch; do
	[ -e "$p" ] || continue
	if ! (cd "$tmp/upstream" && git apply -p2 --whitespace=nowarn "$OLDPWD/$p"); then
		echo "check.sh: $p does not apply to $MODULE@$VERSION" >&2
		exit 1
	fi
done
if ! diff -r -x POSTHORN.md "$tmp/upstream" "$TREE" >"$tmp/diff"; then
	cat "$tmp/diff" >&2
	echo "check.sh: $TREE differs from $MODULE@$VERSION + $PATCHES/*.patch (above:" >&2
	echo "  < expected, > the tree). Change the fork only deliberately: edit it, run" >&2
	echo "  third_party/check.sh -update, and describe the change in $TREE/POSTHORN.md." >&2
	exit 1
fi
echo "check.sh: $TREE is $MODULE@$VERSION + $(ls "$PATCHES" | tr '\n' ' ')"
