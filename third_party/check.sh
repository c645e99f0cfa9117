#!/bin/sh
# check.sh: third_party/go-smtp must be upstream go-smtp $VERSION (from the
# Go module cache, its hash checked) with third_party/patches/go-smtp/*.patch
# applied in order, and nothing else (POSTHORN.md aside). Run by
# `make check-third-party` (part of `make lint` and `make test`).
#
# check.sh -update NNNN-what.patch writes the tree's difference from
# upstream + the patches before it as that patch, after a deliberate
# change (the patches stack, one per change, code and tests together;
# 0001 and 0002 are the DATA reader's code and tests).
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
	# The patches stack: -update NAME rewrites patch NAME (the last one,
	# or a new one sorting after all others) as the difference between
	# upstream with the patches before it and the tree.
	name=${2:-}
	case "$name" in
	[0-9][0-9][0-9][0-9]-*.patch) ;;
	*)
		echo "usage: check.sh -update NNNN-what.patch (the last patch, or a new one)" >&2
		exit 2
		;;
	esac
	for p in "$PATCHES"/*.patch; do
		[ -e "$p" ] || continue
		b=$(basename "$p")
		[ "$b" = "$name" ] && continue
		if [ "$(printf '%s\n%s\n' "$b" "$name" | sort | tail -n 1)" = "$b" ]; then
			echo "check.sh: $b comes after $name; only the last patch can be rewritten" >&2
			exit 1
		fi
		(cd "$tmp/upstream" && git apply -p2 --whitespace=nowarn "$OLDPWD/$p")
	done
	mkdir "$tmp/code"
	cp -R "$tmp/upstream" "$tmp/code/upstream"
	cp -R "$TREE" "$tmp/code/posthorn"
	chmod -R u+w "$tmp/code"
	rm -f "$tmp/code/upstream/POSTHORN.md" "$tmp/code/posthorn/POSTHORN.md"
	mkdir -p "$PATCHES"
	(cd "$tmp/code" && git diff --no-index upstream posthorn) >"$PATCHES/$name" || true
	[ -s "$PATCHES/$name" ] || rm -f "$PATCHES/$name"
	echo "check.sh: wrote $PATCHES/$name"
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
