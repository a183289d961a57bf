#!/usr/bin/env python3
"""Per-type GGUFs of one model, for the quantized-kernel accuracy and speed runs (bench/results/*cpu_gguf_quant*).

  f32     <out>/<stem>.F32.gguf: every tensor of --src dequantized to float32 with gguf.quants.dequantize (the
          metadata and tokenizer copied as they are). The llama-quantize input.
  quant   <out>/<stem>.<TYPE>.gguf for each --types entry: `llama-quantize --pure` (or the named llama.cpp mix, e.g.
          Q4_K_M, without --pure) from the F32 file. Rows that are not a multiple of 256 get llama.cpp's fallback
          type (SmolLM2's 576-wide rows), so K-type files are mixed.
  deq     <out>/<stem>.<TYPE>.deq.gguf: that file dequantized back to float32, the "same weights in fp32" run that
          the KL divergence and greedy agreement are measured against.

Needs `gguf` (0.19) and numpy; llama-quantize from a llama.cpp build (--llama-quantize). Deterministic.
Example: python3 tools/make_quant_ggufs.py --src ~/.cache/anvil/models/SmolLM2-135M-Instruct.Q4_1.gguf \
           --out /work/peers/ggufs --llama-quantize /work/peers/llama.cpp/build/bin/llama-quantize
"""
import argparse
import os
import subprocess

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter
from gguf.constants import GGMLQuantizationType as QT
from gguf.quants import dequantize

DEFAULT_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "Q4_K_M"]


def copy_metadata(reader, writer):
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type)


def write_dequantized(src, dst):
    """`src` with every tensor as float32 [rows, cols] (gguf-py's dequantize), metadata unchanged."""
    reader = GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = GGUFWriter(dst, arch)
    copy_metadata(reader, writer)
    for t in reader.tensors:
        values = dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)
        shape = [int(d) for d in reversed(t.shape)]  # gguf-py shapes are innermost-first
        writer.add_tensor(t.name, values.reshape(shape), raw_dtype=QT.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="a GGUF of the model (any supported types)")
    p.add_argument("--out", required=True, help="output directory (outside the repository: files are large)")
    p.add_argument("--llama-quantize", required=True)
    p.add_argument("--types", nargs="*", default=DEFAULT_TYPES)
    p.add_argument("--steps", nargs="*", default=["f32", "quant", "deq"], choices=["f32", "quant", "deq"])
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.basename(args.src).split(".")[0]
    f32 = os.path.join(args.out, f"{stem}.F32.gguf")
    if "f32" in args.steps:
        write_dequantized(args.src, f32)
    for qtype in args.types:
        qpath = os.path.join(args.out, f"{stem}.{qtype}.gguf")
        if "quant" in args.steps:
            pure = [] if qtype.endswith(("_M", "_S", "_L")) else ["--pure"]
            subprocess.run([args.llama_quantize, *pure, f32, qpath, qtype], check=True,
                           stdout=subprocess.DEVNULL)
        if "deq" in args.steps:
            write_dequantized(qpath, os.path.join(args.out, f"{stem}.{qtype}.deq.gguf"))


if __name__ == "__main__":
    main()
