#!/usr/bin/env python3
"""Device copy bandwidth (read + write) with torch, the ceiling decode speeds are reported against."""
import torch

x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
y = torch.empty_like(x)
for _ in range(3):
    y.copy_(x)
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
s.record()
for _ in range(10):
    y.copy_(x)
e.record()
torch.cuda.synchronize()
print(f"copy bandwidth (read+write): {2 * 10 * x.numel() / (s.elapsed_time(e) / 1e3) / 1e12:.3f} TB/s")
