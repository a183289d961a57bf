#!/usr/bin/env bash
# llama.cpp as a benchmark peer: its source as vendored by the PyPI sdist llama-cpp-python==0.3.36 (nothing of it is
# committed here), slimmed to what a CPU or CUDA build of its benchmark tools needs.
#   bash bench/peers/llama_cpp.sh slim OUT.tar.xz        (here: downloads the sdist, ~26 MB of source -> a few MB)
#   bash bench/peers/llama_cpp.sh build SRC.tar.xz DIR cuda|cpu [JOBS]
#                                                         (the GPU machine: ~4.5 min on 16 cores; tools in DIR/build/bin)
# The slim copy keeps gguf-py (tools/make_random_gguf.py can import it: PYTHONPATH=DIR/gguf-py).
set -euo pipefail
VERSION=0.3.36
cmd=${1:?usage: llama_cpp.sh slim OUT | build SRC DIR cuda|cpu [JOBS]}
case "$cmd" in
  slim)
    out=$(realpath -m "${2:?OUT.tar.xz}"); mkdir -p "$(dirname "$out")"
    work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
    cache="${XDG_CACHE_HOME:-$HOME/.cache}/anvil/peers"; mkdir -p "$cache"
    sdist="$cache/llama_cpp_python-$VERSION.tar.gz"
    [ -f "$sdist" ] || python3 -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$cache"
    tar -xzf "$sdist" -C "$work" "llama_cpp_python-$VERSION/vendor/llama.cpp"
    src="$work/llama_cpp_python-$VERSION/vendor/llama.cpp"
    rm -rf "$src"/{models,docs,media,benches,tests,examples,pocs,app,ci,.devops} "$src"/tools/{ui,server}
    for b in "$src"/ggml/src/ggml-*/; do
      case "$(basename "$b")" in ggml-cpu|ggml-cuda|ggml-blas) ;; *) rm -rf "$b" ;; esac
    done
    mv "$src" "$work/llama.cpp"
    tar -cJf "$out" -C "$work" llama.cpp
    echo "[llama.cpp] slim source: $out ($(du -h "$out" | cut -f1))"
    ;;
  build)
    tarball=${2:?SRC.tar.xz}; dir=${3:?DIR}; kind=${4:?cuda|cpu}; jobs=${5:-$(nproc)}
    mkdir -p "$dir" && tar -xJf "$tarball" -C "$dir" --strip-components=1
    flags=(-DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
           -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON)
    if [ "$kind" = cuda ]; then flags+=(-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a)
    else
      # The CPU peer gets what this CPU has (as GGML_NATIVE would), except AMX: seen advertised in a VM whose tiles
      # fault (ldtilecfg crashed). Machines of this kind differ: AVX-512 on one, AVX2 only on another.
      has() { grep -qw "$1" /proc/cpuinfo && echo ON || echo OFF; }
      flags+=(-DGGML_CUDA=OFF -DGGML_AVX512="$(has avx512f)" -DGGML_AVX512_VNNI="$(has avx512_vnni)"
              -DGGML_AVX512_VBMI="$(has avx512vbmi)" -DGGML_AVX512_BF16="$(has avx512_bf16)"
              -DGGML_AVX_VNNI="$(has avx_vnni)" -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
    fi
    gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
    cmake -S "$dir" -B "$dir/build" "${gen[@]}" "${flags[@]}" > "$dir/cmake.log" 2>&1 || { tail -30 "$dir/cmake.log"; exit 1; }
    cmake --build "$dir/build" -j "$jobs" --target llama-bench llama-batched-bench llama-perplexity llama-quantize \
      > "$dir/build.log" 2>&1 || { tail -40 "$dir/build.log"; exit 1; }
    echo "[llama.cpp] built $kind tools in $dir/build/bin"
    ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
