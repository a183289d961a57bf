"""Latency-vs-rate plot of a W5 result (`anvil bench --workload serving --json`): TTFT, time per output token
and end-to-end latency at P50/P99 against the request rate. Usage: plot_serving.py w5.json out.png"""
import json
import sys


def main(path, out):
    result = json.load(open(path))
    rows = [r for r in result["results"] if r["request_rate"] != "inf"]
    rates = [float(r["request_rate"]) for r in rows]
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (the JSON has every figure)")
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, key, title in zip(axes, ["ttft_ms", "tpot_ms", "e2e_latency_ms"],
                              ["time to first token", "time per output token", "end-to-end latency"]):
        for q in ("p50", "p99"):
            ax.plot(rates, [r[key][q] for r in rows], marker="o", label=q.upper())
        ax.set_xlabel("request rate (req/s)")
        ax.set_ylabel("ms")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(f"W5 {result['architecture']}, {result['num_requests']} requests per rate, "
                 f"lognormal {result['input_len_mean']:.0f} in / {result['output_len_mean']:.0f} out")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
