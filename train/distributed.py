"""Data-parallel training through torch's own launcher (``torch.distributed.run``).

``dsarad train --devices N`` re-runs the same command under the launcher with
N processes; each process finds the launcher's environment, joins the process
group (NCCL on GPUs, gloo on the CPU) and trains on its own random batches,
with gradients averaged by DistributedDataParallel.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch
import torch.distributed as dist


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def join_process_group(device: str) -> str:
    """Join the group the launcher set up; returns the device this rank uses."""
    local_rank = int(os.environ["LOCAL_RANK"])
    use_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        return f"cuda:{local_rank}"
    return "cpu"


def leave_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def launch_distributed(argv: list[str], devices: int) -> int:
    """Re-run ``dsarad train`` (``argv`` without --devices) under the launcher."""
    if torch.cuda.is_available() and devices > torch.cuda.device_count():
        raise ValueError(f"--devices {devices}: only {torch.cuda.device_count()} GPUs are present")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={devices}",
        "-m", "labelme_dsarad.cli", *argv,
    ]
    return subprocess.call(command)
