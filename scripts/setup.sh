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
# FlashInfer's CUDA/C++ headers (with its CUTLASS and CCCL) for the CUDA build's Hopper prefill (ANVIL_FLASHINFER):
# read from the flashinfer-python wheel, extracted once into a cache outside the repository. Only where nvcc is and
# the CUDA build is not turned off (ANVIL_CUDA=OFF, as scripts/demo.sh sets on a machine without a GPU).
FLASHINFER_VERSION=0.7.4
FLASHINFER_DIR="${ANVIL_CACHE_DIR:-$HOME/.cache/anvil}/flashinfer-$FLASHINFER_VERSION"
if [ "${ANVIL_CUDA:-AUTO}" != OFF ] && { command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; } &&
   [ ! -f "$FLASHINFER_DIR/flashinfer/data/include/flashinfer/attention/hopper/prefill_sm90.cuh" ]; then
  echo "[setup] fetching flashinfer-python==$FLASHINFER_VERSION headers into $FLASHINFER_DIR"
  tmp="$(mktemp -d)"
  # NOTE: not fatal: without the headers CMake's ANVIL_FLASHINFER=AUTO builds our prefill kernel alone.
  if python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "flashinfer-python==$FLASHINFER_VERSION"; then
    mkdir -p "$FLASHINFER_DIR"
    python3 - "$tmp"/flashinfer_python-*.whl "$FLASHINFER_DIR" <<'PY'
import sys, zipfile
keep = tuple("flashinfer/data/" + d for d in ("include/", "cutlass/include/", "cutlass/tools/util/include/", "cccl/"))
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith(keep)])
PY
  else
    echo "[setup] warning: could not fetch flashinfer-python; the CUDA build will use Anvil's prefill kernel only"
  fi
  rm -rf "$tmp"
fi
echo "[setup] done"
