#!/usr/bin/env python3
"""The GPU's ceilings in this call, measured with torch: device copy bandwidth (bytes read + written) and dense
bf16 / fp8 GEMM rates (8192^3). Every per-op floor (bench/op_floors.py) and every % of limit is taken against
these. Writes one JSON object to --out (and prints it)."""
import argparse
import json

import torch


def timed(fn, iters):
    for _ in range(3):
        fn()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(iters):
        fn()
    e.record()
    torch.cuda.synchronize()
    return s.elapsed_time(e) / 1e3 / iters


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    out = {"gpu": torch.cuda.get_device_name()}
    x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    out["copy_tb_s"] = 2 * x.numel() / timed(lambda: y.copy_(x), 10) / 1e12
    del x, y
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    out["bf16_gemm_tflops"] = 2 * n ** 3 / timed(lambda: a @ b, 20) / 1e12
    try:  # torch._scaled_mm: e4m3 x e4m3 with fp32 scales, bf16 out (cuBLASLt underneath)
        a8 = a.to(torch.float8_e4m3fn)
        b8 = b.t().contiguous().to(torch.float8_e4m3fn).t()
        one = torch.ones((), device="cuda")
        out["fp8_gemm_tflops"] = 2 * n ** 3 / timed(
            lambda: torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=torch.bfloat16), 20) / 1e12
    except Exception as e:  # noqa: BLE001 - a missing fp8 path is reported, not fatal
        out["fp8_gemm_error"] = str(e)[:200]
    print(json.dumps(out))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
