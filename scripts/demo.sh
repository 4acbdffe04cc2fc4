#!/usr/bin/env bash
# The README's first command: install what is needed, bring the lab up, build and sign the
# reference SPSE 1.0 release, install it on every lab site, and show each site serving it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
home="${LPSE_OPS_HOME:-$HOME/.local/share/lpse-ops}"
sites="${LPSE_OPS_LAB_SITES:-3}"

echo "==> bringing the lab up ($sites sites + offsite S3)"
lpse-ops lab up --sites "$sites"

keys="$home/release-keys"
if [ ! -f "$keys/release.key" ]; then
  echo "==> making a release signing key (private key stays in $keys, outside git)"
  lpse-ops bundle keygen --out-dir "$keys" --name release
fi
mkdir -p "$home/trusted-keys"
cp "$keys/release.pub" "$home/trusted-keys/lab-release.pub"

echo "==> building the reference SPSE 1.0 and 1.1 into signed bundles"
lpse-ops bundle reference --version 1.0 --key "$keys/release.key" --out "$home/bundles"
lpse-ops bundle reference --version 1.1 --key "$keys/release.key" --out "$home/bundles"
lpse-ops bundle verify "$home/bundles/spse-1.0.tar.gz" --trusted-keys "$home/trusted-keys"

echo "==> installing SPSE 1.0 on every site"
lpse-ops inventory validate --for install
lpse-ops install "$home/bundles/spse-1.0.tar.gz" --trusted-keys "$home/trusted-keys"

echo "==> every site, through nginx (HTTPS on 127.0.0.1):"
lpse-ops lab status --expect-version 1.0
echo "==> demo done: the lab stays up (lpse-ops lab down removes it)"
