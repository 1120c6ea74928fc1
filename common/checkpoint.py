"""Checkpoints: atomic writes, safe loads, and exact-resume state.

* Writes go to a temp file in the same folder, are fsync'ed, then ``os.replace``d over the target,
  so a crash mid-write leaves the previous checkpoint intact.
* Loads use ``torch.load(..., weights_only=True)``: a checkpoint from the internet cannot run code.
  Everything saved is therefore plain data (tensors, numbers, strings, lists, dicts); RNG states
  are converted to tensors/lists.
* Files are written readable by the group and others as the umask allows (``0644`` under the
  usual ``022``), like any other output: ``mkstemp``'s private ``0600`` is not kept.
* A file that cannot be read (truncated, not a checkpoint) or does not fit the model raises
  :class:`CheckpointError` naming the file: never a bare ``PytorchStreamReader`` message.
* :func:`save_training_state` / :func:`load_training_state` cover model, optimizer, scheduler,
  grad scaler, RNG states (python, numpy, torch CPU, CUDA), epoch, step and anything extra, for
  one process (schema 1). :meth:`common.run.Run.save` writes schema 2: one RNG state per rank.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

SCHEMA_VERSION = 1        # save_training_state: one RNG state (rank 0's)
RUN_SCHEMA_VERSION = 2    # common.run.Run.save: a list of RNG states, one per rank, and the run record
KNOWN_SCHEMAS = (SCHEMA_VERSION, RUN_SCHEMA_VERSION)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or does not fit what it is loaded into; names the file."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """``weights_only`` refused an object in the file (it would run code when unpickled)."""


def _file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_save(obj: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _file_mode())
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
    """``torch.load(weights_only=True)``; a missing file is ``FileNotFoundError``, anything that
    cannot be read is :class:`CheckpointError` naming the file and its size."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Weights only" in str(e):
            why = [x.strip() for x in str(e).splitlines() if "Unsupported global" in x or "WeightsUnpickler" in x]
            raise UnsafeCheckpointError(f"{path}: refused to load: the file holds objects other than tensors and "
                                        f"plain data, which could run code when unpickled (weights_only=True). "
                                        f"{why[0] if why else str(e).splitlines()[0]}") from e
        raise CheckpointError(f"{path}: not a readable checkpoint ({path.stat().st_size} bytes): {e}") from e
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError, ImportError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({path.stat().st_size} bytes; truncated, "
                              f"still being written, or not a PyTorch file): {msg}") from e


def load_state_into(obj: Any, state: Any, path: str | Path, what: str) -> None:
    """``obj.load_state_dict(state)``; a mismatch (another width, a renamed layer) becomes a
    :class:`CheckpointError` naming the checkpoint and what was being loaded."""
    try:
        obj.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
        raise CheckpointError(f"{path}: the checkpoint's {what} does not fit this run's {what} (was it trained "
                              f"with another config or code version?): {str(e).strip()[:2000]}") from e


# --------------------------------------------------------------------------- RNG

def capture_rng(cuda: str | torch.device | None = "all") -> dict:
    """python, numpy, torch CPU and CUDA generator states as plain data. ``cuda``: ``"all"``
    devices' states, one device's (a DDP rank's own), or ``None``."""
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
    if torch.cuda.is_available() and cuda is not None:
        if cuda == "all":
            state["cuda"] = torch.cuda.get_rng_state_all()
        elif torch.device(cuda).type == "cuda":
            dev = torch.device(cuda)
            state["cuda_device"] = torch.cuda.current_device() if dev.index is None else dev.index
            state["cuda"] = torch.cuda.get_rng_state(state["cuda_device"])
    return state


def restore_rng(state: dict) -> None:
    random.setstate(_to_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        if "cuda_device" in state:
            torch.cuda.set_rng_state(state["cuda"].cpu(), state["cuda_device"])
        else:
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def to_plain(x):
    """Numpy scalars and arrays inside a state (a scheduler's ``np.float64`` learning rate...) as
    Python numbers and tensors, so ``weights_only`` loading accepts the file."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, dict):
        return {k: to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_plain(v) for v in x)
    return x


def _to_plain(x):
    if isinstance(x, tuple):
        return [_to_plain(v) for v in x]
    return x


def _to_tuple(x):
    if isinstance(x, list):
        return tuple(_to_tuple(v) for v in x)
    return x


# --------------------------------------------------------------------------- training state

def training_state(*, model: torch.nn.Module, optimizer: Any = None, scheduler: Any = None, scaler: Any = None,
                   epoch: int = 0, step: int = 0, **more_modules: Any) -> dict:
    """The state dicts of everything given (``model`` unwrapped from DDP) with epoch and step."""
    from common.runtime import unwrap

    return {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "modules": {k: (unwrap(v) if isinstance(v, torch.nn.Module) else v).state_dict()
                    for k, v in more_modules.items()},
        "epoch": int(epoch),
        "step": int(step),
    }


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
    state = training_state(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, epoch=epoch,
                           step=step, **more_modules)
    state.update(schema_version=SCHEMA_VERSION, rng=capture_rng(), config=config, extra=extra or {})
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
    """Restore a state saved by :func:`save_training_state` (or :meth:`common.run.Run.save`, in
    which case ``rank``'s RNG state is restored); returns it (epoch, step, extra...)."""
    state = safe_load(path, map_location)
    restore_training_state(state, path, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                           restore_rng_state=restore_rng_state, **more_modules)
    return state


def restore_training_state(state: dict, path: str | Path, *, model: torch.nn.Module | None = None,
                           optimizer: Any = None, scheduler: Any = None, scaler: Any = None,
                           restore_rng_state: bool = True, rank: int = 0, **more_modules: Any) -> None:
    """Load an already-read checkpoint ``state`` (from ``path``, named in errors) into the objects
    given; restore rank ``rank``'s RNG state."""
    from common.runtime import unwrap

    if not isinstance(state, dict) or state.get("schema_version") not in KNOWN_SCHEMAS:
        found = state.get("schema_version") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: not a training checkpoint (schema {found}; expected one of {KNOWN_SCHEMAS})")
    if model is not None:
        load_state_into(unwrap(model), state["model"], path, "model")
    for obj, key in ((optimizer, "optimizer"), (scheduler, "scheduler"), (scaler, "scaler")):
        if obj is not None:
            if state.get(key) is None:
                raise CheckpointError(f"{path}: has no {key} state to resume from")
            load_state_into(obj, state[key], path, key)
    for k, v in more_modules.items():
        if k not in state.get("modules", {}):
            raise CheckpointError(f"{path}: has no state for {k!r} (has {sorted(state.get('modules', {}))})")
        load_state_into(unwrap(v) if isinstance(v, torch.nn.Module) else v, state["modules"][k], path, k)
    if restore_rng_state:
        rng = state["rng"]
        restore_rng(rng[rank] if isinstance(rng, list) else rng)


def load_model_weights(path: str | Path, model: torch.nn.Module, map_location="cpu") -> dict:
    """Load only the model weights (for eval) from a training-state checkpoint or a bare state dict."""
    from common.runtime import unwrap

    state = safe_load(path, map_location)
    sd = state["model"] if isinstance(state, dict) and "model" in state else state
    load_state_into(unwrap(model), sd, path, "model")
    return state if isinstance(state, dict) else {}
