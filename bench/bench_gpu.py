"""On a CUDA GPU: `paper` latency eager against fast, and the attention's peak memory.

    .venv/bin/python bench/bench_gpu.py [--rounds 20] [--batch-sizes 1 8]

Latency: eager fp32 with the explicit attention matrix and unfused BatchNorm
(baseline) against ``TorchBackend`` on CUDA (BatchNorm folded, channels-last,
SDPA, bf16 autocast), interleaved, with the maps' largest difference (bf16
makes it larger than on the CPU). Memory: peak allocation of one attention
block at `paper` for a 256x256 input (16,384 queries, 4,096 keys), explicit
matrix against SDPA, with NCHW and channels-last input: SDPA's fused kernels
need contiguous queries, which channels-last input gives.
Training steps on the GPU: bench_training.py --device cuda --preset paper.
Prints "no GPU" and exits when CUDA is not available.
"""

from __future__ import annotations

import argparse

import torch
from _common import interleaved, machine_line, median, print_table, random_model, stderr

from labelme_dsarad.model.inference import TorchBackend


def synchronised(run):
    def timed():
        result = run()
        torch.cuda.synchronize()
        return result

    return timed


def latency_rows(batch_sizes: list[int], rounds: int) -> list[list[str]]:
    device = torch.device("cuda")
    loaded = random_model("paper")
    baseline = loaded.network.to(device).eval()
    fast = TorchBackend(baseline, device)
    baseline.set_explicit_attention(True)
    rows = []
    for batch in batch_sizes:
        tensor = torch.rand(batch, 3, 256, 256, generator=torch.Generator().manual_seed(batch)).to(device)

        def run_baseline(tensor: torch.Tensor = tensor) -> torch.Tensor:
            with torch.inference_mode():
                return baseline(tensor)[0]

        reference = run_baseline().float().cpu().numpy()
        difference = float(abs(fast(tensor)[0] - reference).max())
        seconds = interleaved({"eager fp32 explicit": synchronised(run_baseline),
                               "fast (fused, channels-last, SDPA, bf16)": synchronised(lambda tensor=tensor: fast(tensor))},
                              rounds, warmup=3)
        base = median(seconds["eager fp32 explicit"])
        for name, values in seconds.items():
            rows.append([str(batch), name, f"{median(values) * 1000 / batch:.1f}", f"{base / median(values):.2f}x",
                         "-" if values is seconds["eager fp32 explicit"] else f"{difference:.1e}"])
    return rows


def attention_memory_rows() -> list[list[str]]:
    device = torch.device("cuda")
    attention = random_model("paper").network.student.encoder.attention.to(device).eval()
    channels = attention.theta.in_channels
    features = torch.randn(1, channels, 128, 128, device=device)  # block 2 of a 256x256 input
    rows = []
    for label, explicit, layout in [
        ("explicit matrix", True, torch.contiguous_format),
        ("SDPA, NCHW input", False, torch.contiguous_format),
        ("SDPA, channels-last input", False, torch.channels_last),
    ]:
        attention.explicit_attention = explicit
        block = attention.to(memory_format=layout)
        inputs = features.contiguous(memory_format=layout)
        for dtype in (torch.float32, torch.bfloat16):
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype is torch.bfloat16):
                block(inputs)
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - before
            rows.append([label, str(dtype).replace("torch.", ""), f"{peak / 2**20:.0f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no GPU")
        return
    stderr("timing paper latency")
    latency = latency_rows(args.batch_sizes, args.rounds)
    memory = attention_memory_rows()
    print(f"\nGPU, paper, 256x256; {machine_line()}")
    print_table(["batch", "path", "median ms per image", "speed-up", "max |map - baseline|"], latency)
    print()
    print_table(["attention at paper, 16,384 x 4,096", "dtype", "peak MiB"], memory)


if __name__ == "__main__":
    main()
