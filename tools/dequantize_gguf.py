"""Writes a copy of a GGUF file with every tensor dequantized to F32 (metadata, tokenizer and tensor order kept):
the unquantized reference of the quantization accuracy table (bench/results/2026-12-03_quant_accuracy.md), since
the small models' only shipped checkpoint is a quantized GGUF.

Usage: /work/venv-hf/bin/python tools/dequantize_gguf.py IN.gguf OUT.gguf
"""
import sys

import gguf
import numpy as np


def main(src: str, dst: str) -> None:
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        vtype = field.types[0]
        sub = field.types[1] if vtype == gguf.GGUFValueType.ARRAY and len(field.types) > 1 else None
        writer.add_key_value(name, field.contents(), vtype, sub_type=sub)
    for t in reader.tensors:
        # gguf's dequantize gives the logical shape (outermost first), which is what add_tensor expects.
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        writer.add_tensor(t.name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
