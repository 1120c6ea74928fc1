"""Runtime: device choice, seeding, determinism, torchrun DDP, AMP, and loss guards.

DDP is set up from the environment torchrun provides (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT): ``torchrun --nproc_per_node=2 ecrl/train.py ...`` on one machine, and torchrun's own
``--nnodes/--node_rank/--rdzv_*`` flags for several. Backend: nccl on CUDA, gloo on CPU.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

# --------------------------------------------------------------------------- device

def resolve_device(spec: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> cuda:<local_rank> when CUDA is present, else mps, else cpu.

    An explicit ``cuda``/``cuda:N``/``mps`` that is not available is an error, not a silent
    fallback: a user who asked for a GPU should learn that they do not have one.
    """
    spec = (spec or "auto").lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {spec} requested but CUDA is not available")
        if spec == "cuda":
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        idx = int(spec.split(":", 1)[1])
        if idx >= torch.cuda.device_count():
            raise RuntimeError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", idx)
    if spec == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise RuntimeError("--device mps requested but MPS is not available")
        return torch.device("mps")
    raise ValueError(f"unknown device {spec!r}; use auto|cpu|cuda|cuda:N|mps")


# --------------------------------------------------------------------------- seeds

def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed python, numpy and torch (all devices) with ``seed + rank``; returns that seed."""
    s = int(seed) + int(rank)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(s)
    return s


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive numpy/random seeds from torch's per-worker seed."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def make_generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


def set_deterministic(enabled: bool = True) -> None:
    """Opt-in deterministic mode: deterministic kernels (errors on ops that have none),
    cudnn benchmark off. ``CUBLAS_WORKSPACE_CONFIG`` is set here if the caller has not."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.benchmark = not enabled
    torch.backends.cudnn.deterministic = enabled


# --------------------------------------------------------------------------- distributed

@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_spec: str = "auto") -> tuple[DistInfo, torch.device]:
    """Initialise torch.distributed when launched by torchrun; otherwise a 1-process DistInfo.

    Returns the process's DistInfo and its device (cuda:<LOCAL_RANK> under torchrun on GPUs).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec, local)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local), device


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """Broadcast a picklable object from ``src`` (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(value: float | torch.Tensor, device: torch.device | None = None) -> float:
    """Mean of a scalar over ranks (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return float(value)
    t = torch.as_tensor(float(value), dtype=torch.float64, device=device or "cpu")
    dist.all_reduce(t)
    return float(t) / dist.get_world_size()


def all_gather_objects(obj) -> list:
    """Gather a picklable object from every rank (``[obj]`` without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def wrap_ddp(model: torch.nn.Module, info: DistInfo, device: torch.device, **kw) -> torch.nn.Module:
    """Wrap in DistributedDataParallel when distributed; returns the model unchanged otherwise."""
    if not info.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids, **kw)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


# --------------------------------------------------------------------------- AMP

def amp_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def autocast(device: torch.device, enabled: bool):
    """The AMP switch: bf16 autocast on CUDA (fp16 on GPUs without bf16), bf16 on CPU only when
    explicitly enabled; a no-op context otherwise."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype(device))


def make_grad_scaler(device: torch.device, amp: bool) -> torch.amp.GradScaler:
    """A GradScaler that is active only for fp16 autocast (bf16 needs none)."""
    enabled = bool(amp and device.type == "cuda" and amp_dtype(device) == torch.float16)
    return torch.amp.GradScaler(device.type if device.type == "cuda" else "cpu", enabled=enabled)


# --------------------------------------------------------------------------- guards

class NonFiniteLossError(FloatingPointError):
    """Raised when a loss is NaN/Inf; training stops and the last good checkpoint is kept."""


def check_finite(loss: torch.Tensor | float, step: int, epoch: int | None = None, parts: dict | None = None) -> None:
    v = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    if math.isfinite(v):
        return
    detail = ""
    if parts:
        detail = " components: " + ", ".join(
            f"{k}={float(x.detach()) if isinstance(x, torch.Tensor) else float(x):.4g}" for k, x in parts.items()
        )
    where = f"epoch {epoch} step {step}" if epoch is not None else f"step {step}"
    raise NonFiniteLossError(
        f"non-finite loss ({v}) at {where}.{detail} Training stopped; the last good checkpoint "
        f"(checkpoints/last.pt in the run directory) is kept. Lower the learning rate, check the "
        f"input data for NaN/Inf, or turn AMP off."
    )
