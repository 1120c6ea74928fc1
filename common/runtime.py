"""Runtime: device choice, seeding, determinism, torchrun DDP, AMP, and loss guards.

DDP is set up from the environment torchrun provides (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT): ``torchrun --nproc_per_node=2 ecrl/train.py ...`` on one machine, and torchrun's own
``--nnodes/--node_rank/--rdzv_*`` flags for several. Backend: nccl on CUDA, gloo on CPU.
"""

from __future__ import annotations

import contextlib
import ctypes
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
    """Wait for every rank, then leave the process group.

    The closing barrier's ``Work`` is kept alive until the process ends (one reference is
    deliberately never released). Without that, the gloo worker thread that ran the barrier could
    drop the last reference to it, and to the finished collectives it waited on, *after* the main
    thread has begun interpreter finalization; freeing their tensors needs the GIL there, and the
    rank aborts with "terminate called without an active exception" (SIGABRT) although training
    finished (torch 2.14, gloo: 1 run in 5 to 1 in 25 of ``tests/toy.py`` on 2 busy cores; gdb
    showed ``~AsyncBarrierWork`` in ``ProcessGroupGloo::runLoop``). With the reference kept, the
    worker never frees them."""
    if dist.is_available() and dist.is_initialized():
        work = dist.barrier(async_op=True)
        if work is not None:
            work.wait()
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(work))  # never freed: see above
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

KEPT = ("Training stopped; the last good checkpoint (checkpoints/last.pt in the run directory) is kept: "
        "resume from it with --resume. Lower the learning rate, check the input data for NaN/Inf, or turn AMP off.")


class NonFiniteError(FloatingPointError):
    """A NaN/Inf loss, gradient, parameter or optimizer state. Training stops before it reaches
    the weights or a checkpoint; the last good checkpoint is kept."""


class NonFiniteLossError(NonFiniteError):
    """The loss itself is NaN/Inf."""


def _value(x) -> float:
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


def check_finite(loss: torch.Tensor | float, step: int, epoch: int | None = None, parts: dict | None = None) -> None:
    """Raise :class:`NonFiniteLossError` when ``loss`` is NaN/Inf (with the loss ``parts``)."""
    v = _value(loss)
    if math.isfinite(v):
        return
    detail = ""
    if parts:
        detail = " components: " + ", ".join(f"{k}={_value(x):.4g}" for k, x in parts.items()
                                             if not isinstance(x, torch.Tensor) or x.numel() == 1)
    where = f"epoch {epoch} step {step}" if epoch is not None else f"step {step}"
    raise NonFiniteLossError(f"non-finite loss ({v}) at {where}.{detail} {KEPT}")


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    """One reduction (one device sync) over many tensors; exact: an overflowing norm of finite
    values only sends the caller to the per-tensor check."""
    if not tensors:
        return True
    try:
        norms = torch._foreach_norm([t.detach() for t in tensors])
        return bool(torch.isfinite(torch.stack([n.float() for n in norms])).all())
    except (RuntimeError, AttributeError, TypeError):
        return all(bool(torch.isfinite(t.detach()).all()) for t in tensors)


def first_nonfinite(named: list[tuple[str, torch.Tensor]]) -> str | None:
    """Name of the first tensor holding a NaN/Inf, with what it holds, or ``None``."""
    named = [(n, t) for n, t in named if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex())]
    if _all_finite([t for _, t in named]):
        return None
    for n, t in named:
        bad = ~torch.isfinite(t.detach())
        if bool(bad.any()):
            n_nan, n_bad = int(torch.isnan(t.detach()).sum()), int(bad.sum())
            return f"{n} (shape {tuple(t.shape)}: {n_nan} NaN, {n_bad - n_nan} Inf of {t.numel()})"
    return None


def check_step(loss_or_parts, model: torch.nn.Module, step: int, epoch: int | None = None,
               parts: dict | None = None, scaler=None) -> None:
    """The per-step guard, after ``backward()`` and before ``optimizer.step()``: the loss, every
    gradient and every parameter must be finite, else :class:`NonFiniteError` naming the first bad
    tensor (by parameter name). ``loss_or_parts``: the loss, or the objective's dict with a
    ``"loss"`` entry (its other entries are printed). With an enabled fp16 ``scaler`` gradients are
    not checked: an overflow there is the scaler's to skip."""
    if isinstance(loss_or_parts, dict):
        parts = parts or loss_or_parts
        loss = loss_or_parts["loss"]
    else:
        loss = loss_or_parts
    check_finite(loss, step, epoch, parts)
    _testing_hold(step)
    where = f"epoch {epoch} step {step}" if epoch is not None else f"step {step}"
    named = list(unwrap(model).named_parameters())
    if scaler is None or not scaler.is_enabled():
        bad = first_nonfinite([(n, p.grad) for n, p in named if p.grad is not None])
        if bad:
            raise NonFiniteError(f"non-finite gradient at {where} (loss {_value(loss):.4g} is finite): "
                                 f"gradient of {bad}. The optimizer step was not taken. {KEPT}")
    bad = first_nonfinite(named)
    if bad:
        raise NonFiniteError(f"non-finite parameter at {where}: {bad} (the previous optimizer step produced it). {KEPT}")


def _testing_hold(step: int) -> None:
    """Test hook for :func:`common.testing.kill_and_resume`: with ``COMMON_TESTING_HOLD_AT_STEP=N``
    and ``COMMON_TESTING_HOLD_DIR=D`` in the environment, the process writes ``D/hold.<rank>`` on
    reaching step ``N`` and waits there to be killed (SIGKILL, so a kill lands at a known step
    mid-epoch). It gives up after ``COMMON_TESTING_HOLD_TIMEOUT`` s (default 300) so an orphan never
    lingers. Inert otherwise: one environment lookup per step."""
    at = os.environ.get("COMMON_TESTING_HOLD_AT_STEP")
    if at is None or int(at) != int(step):
        return
    import time
    from pathlib import Path

    d = Path(os.environ["COMMON_TESTING_HOLD_DIR"])
    (d / f"hold.{os.environ.get('RANK', '0')}").write_text(f"{os.getpid()} {step}\n")
    deadline = time.monotonic() + float(os.environ.get("COMMON_TESTING_HOLD_TIMEOUT", "300"))
    while time.monotonic() < deadline:
        time.sleep(0.05)
    os._exit(98)
