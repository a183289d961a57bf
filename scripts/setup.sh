#!/usr/bin/env bash
# Installs everything Anvil needs on a fresh Debian machine (idempotent): compilers, libraries, Python tools.
# Usage: bash scripts/setup.sh        (re-running is cheap: installed packages are skipped)
set -euo pipefail

APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libopenblas-dev nlohmann-json3-dev libcli11-dev libfmt-dev libspdlog-dev
  libgtest-dev libgmock-dev clang libclang-rt-14-dev libboost-dev libpcre2-dev
)
# nanobind and scikit-build-core: the Python package (pip install ., and the module the test build makes).
PIP_PACKAGES=(pytest numpy openai httpx requests nanobind scikit-build-core)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

pip_missing=()
for p in "${PIP_PACKAGES[@]}"; do
  python3 -c "import ${p//-/_}" 2>/dev/null || pip_missing+=("$p")  # scikit-build-core imports as scikit_build_core
done
if [ ${#pip_missing[@]} -gt 0 ]; then
  echo "[setup] installing PyPI packages: ${pip_missing[*]}"
  python3 -m pip install -q "${pip_missing[@]}"
fi
echo "[setup] done"
