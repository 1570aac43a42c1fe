#!/usr/bin/env bash
# Installs the Debian packages modelpack needs to build, test and run its demo, if any is missing.
# Usage: scripts/deps.sh [build|test|demo|fixtures]   (default: test)
# fixtures: only what tests/fixtures/make_fixtures.py needs to regenerate the committed fixtures.
set -euo pipefail
what=${1:-test}
pkgs=(cmake g++ make pkg-config libflatbuffers-dev flatbuffers-compiler libxxhash-dev libzstd-dev zstd
      libdnnl-dev ocl-icd-opencl-dev libcli11-dev nlohmann-json3-dev
      libzip-dev libhtscodecs-dev libsodium-dev)
case "$what" in
  build) ;;
  test) pkgs+=(catch2 libbenchmark-dev python3 python3-numpy python3-pytest python3-xxhash python3-zstandard binutils abigail-tools clang libclang-rt-14-dev) ;;
  demo) pkgs+=(python3 python3-numpy python3-sklearn) ;;
  # libopenblas0: python3-torch only recommends an optimized BLAS; without one (these installs skip
  # recommends) PyTorch's matmuls run on the reference BLAS, 10-40x slower, and the benchmarks that
  # put PyTorch beside us (bench/gpt2_vs_torch.py) would compare against a crippled peer.
  fixtures) pkgs=(python3-torch python3-sklearn python3-numpy libopenblas0) ;;
  *) echo "usage: $0 [build|test|demo|fixtures]" >&2; exit 2 ;;
esac
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing missing Debian packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
