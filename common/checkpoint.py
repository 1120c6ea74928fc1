"""Checkpoints: atomic writes, safe loads, and exact-resume state.

* Writes go to a temp file in the same folder, are fsync'ed, then ``os.replace``d over the target,
  so a crash mid-write leaves the previous checkpoint intact.
* Loads use ``torch.load(..., weights_only=True)``: a checkpoint from the internet cannot run code.
  Everything saved is therefore plain data (tensors, numbers, strings, lists, dicts); RNG states
  are converted to tensors/lists.
* :func:`save_training_state` / :func:`load_training_state` cover model, optimizer, scheduler,
  grad scaler, RNG states (python, numpy, torch CPU, CUDA), epoch, step and anything extra.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

SCHEMA_VERSION = 1


def atomic_save(obj: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def safe_load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location=map_location, weights_only=True)


# --------------------------------------------------------------------------- RNG

def capture_rng() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": _to_plain(random.getstate()),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    random.setstate(_to_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _to_plain(x):
    if isinstance(x, tuple):
        return [_to_plain(v) for v in x]
    return x


def _to_tuple(x):
    if isinstance(x, list):
        return tuple(_to_tuple(v) for v in x)
    return x


# --------------------------------------------------------------------------- training state

def save_training_state(
    path: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    epoch: int = 0,
    step: int = 0,
    config: dict | None = None,
    extra: dict | None = None,
    **more_modules: Any,
) -> Path:
    """Save everything needed for an exact resume. ``epoch`` is the number of *completed* epochs.

    ``more_modules`` takes further objects with ``state_dict()`` (an EMA teacher, a second
    optimizer, a discriminator...), restored by the same keyword in :func:`load_training_state`.
    """
    from common.runtime import unwrap

    state = {
        "schema_version": SCHEMA_VERSION,
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": int(epoch),
        "step": int(step),
        "rng": capture_rng(),
        "config": config,
        "extra": extra or {},
        "modules": {k: unwrap(v).state_dict() if isinstance(v, torch.nn.Module) else v.state_dict()
                    for k, v in more_modules.items()},
    }
    return atomic_save(state, path)


def load_training_state(
    path: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    map_location: str | torch.device = "cpu",
    restore_rng_state: bool = True,
    **more_modules: Any,
) -> dict:
    """Restore a state saved by :func:`save_training_state`; returns it (epoch, step, extra...)."""
    from common.runtime import unwrap

    state = safe_load(path, map_location)
    if state.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: checkpoint schema {state.get('schema_version')} != {SCHEMA_VERSION}")
    unwrap(model).load_state_dict(state["model"])
    for obj, key in ((optimizer, "optimizer"), (scheduler, "scheduler"), (scaler, "scaler")):
        if obj is not None:
            if state[key] is None:
                raise ValueError(f"{path}: has no {key} state to resume from")
            obj.load_state_dict(state[key])
    for k, v in more_modules.items():
        if k not in state["modules"]:
            raise ValueError(f"{path}: has no state for {k!r} (has {sorted(state['modules'])})")
        (unwrap(v) if isinstance(v, torch.nn.Module) else v).load_state_dict(state["modules"][k])
    if restore_rng_state:
        restore_rng(state["rng"])
    return state


def load_model_weights(path: str | Path, model: torch.nn.Module, map_location="cpu") -> dict:
    """Load only the model weights (for eval) from a training-state checkpoint or a bare state dict."""
    from common.runtime import unwrap

    state = safe_load(path, map_location)
    sd = state["model"] if isinstance(state, dict) and "model" in state else state
    unwrap(model).load_state_dict(sd)
    return state if isinstance(state, dict) else {}
