"""Per-video clip features: one HDF5 file keyed by video id, or a folder of ``<vid>.npy``; and
resampling of a variable-length sequence to a fixed number of clips.

Standard feature types and their dims (what a config's ``feature_dim`` should say):
``FEATURE_DIMS``. The HDF5 file is opened lazily, once per process (so once per DataLoader
worker: a handle inherited through fork is never used). A value may be a dataset ``[T, D]`` or a
group holding one dataset (the official ActivityNet ``c3d_features`` layout).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from common.data import DataFormatError, DatasetNotFoundError

FEATURE_DIMS = {
    "activitynet_c3d": 500,   # official C3D fc7 -> PCA 500
    "tacos_c3d": 4096,        # TALL C3D fc6
    "charades_i3d": 1024,     # I3D (fine-tuned on Charades, VSLNet/LGI release)
    "charades_vgg": 4096,     # VGG16 fc7 (2D-TAN vgg_rgb_features.hdf5)
    "charades_c3d": 4096,
}


class MissingVideoError(DatasetNotFoundError):
    """Videos named by the annotations have no features; the message lists them and the path."""


class FeatureStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise DatasetNotFoundError(f"feature store {self.path} not found (an .h5/.hdf5 file or a folder of <vid>.npy)")
        self.kind = "npy" if self.path.is_dir() else "h5"
        if self.kind == "h5" and self.path.suffix not in (".h5", ".hdf5"):
            raise DataFormatError(f"{self.path}: feature file must be .h5/.hdf5 (or a folder of <vid>.npy)")
        self._h5 = None
        self._pid = None
        self._keys: set[str] | None = None
        self._dim: int | None = None

    # HDF5 handles must not cross a fork: reopen in every process.
    def _file(self):
        if self._h5 is None or self._pid != os.getpid():
            import h5py

            self._h5 = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._h5

    def __getstate__(self):
        st = self.__dict__.copy()
        st["_h5"] = None
        st["_pid"] = None
        return st

    def close(self) -> None:
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5 = None

    def keys(self) -> set[str]:
        if self._keys is None:
            if self.kind == "npy":
                self._keys = {p.stem for p in self.path.glob("*.npy")}
            else:
                self._keys = set(self._file().keys())
        return self._keys

    def __contains__(self, vid: str) -> bool:
        return vid in self.keys()

    def __len__(self) -> int:
        return len(self.keys())

    def _raw(self, vid: str):
        if vid not in self:
            raise MissingVideoError(f"{self.path}: no features for video {vid!r}")
        if self.kind == "npy":
            return np.load(self.path / f"{vid}.npy", allow_pickle=False)
        import h5py

        item = self._file()[vid]
        if isinstance(item, h5py.Group):
            dsets = [k for k in item if isinstance(item[k], h5py.Dataset)]
            if len(dsets) != 1:
                raise DataFormatError(f"{self.path}: group {vid!r} holds {len(dsets)} datasets {dsets}; expected one")
            item = item[dsets[0]]
        return item[()]

    def get(self, vid: str) -> np.ndarray:
        """Features of ``vid`` as float32 ``[T, D]``; wrong rank, empty or non-finite values are an
        error naming the file and the video."""
        x = self._raw(vid)
        if x.ndim != 2 or x.shape[0] == 0:
            raise DataFormatError(f"{self.path}: video {vid!r}: features have shape {x.shape}, expected [T>0, D]")
        x = np.asarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            bad = int((~np.isfinite(x)).any(axis=1).sum())
            raise DataFormatError(f"{self.path}: video {vid!r}: {bad} clip(s) have NaN/Inf features")
        return x

    @property
    def dim(self) -> int:
        if self._dim is None:
            keys = sorted(self.keys())
            if not keys:
                raise DataFormatError(f"{self.path}: feature store is empty")
            self._dim = int(self._raw(keys[0]).shape[-1])
        return self._dim

    def durations(self, vids: Iterable[str], seconds_per_frame: float) -> dict[str, float]:
        """``{vid: T * seconds_per_frame}``: video durations from the feature length, for
        Charades-STA without ``charades.json`` (pass the result as ``read_annotations(durations=)``).
        ``seconds_per_frame`` is the feature extractor's stride (e.g. I3D at 24 fps, stride 24 -> 1.0)."""
        vids = list(dict.fromkeys(vids))
        self.check(vids)
        out = {}
        for v in vids:
            if self.kind == "h5":
                item = self._file()[v]
                shape = item.shape if hasattr(item, "shape") else next(iter(item.values())).shape
            else:
                shape = np.load(self.path / f"{v}.npy", mmap_mode="r").shape
            out[v] = float(shape[0]) * float(seconds_per_frame)
        return out

    def check(self, vids: Iterable[str], dim: int | None = None) -> None:
        """Raise :class:`MissingVideoError` listing every video of ``vids`` without features (before
        training starts), and :class:`DataFormatError` when ``dim`` is given and differs."""
        missing = sorted({v for v in vids if v not in self})
        if missing:
            shown = ", ".join(missing[:20]) + (f", ... ({len(missing)} in all)" if len(missing) > 20 else "")
            raise MissingVideoError(f"{self.path}: no features for {len(missing)} video(s): {shown}")
        if dim is not None and self.dim != dim:
            raise DataFormatError(f"{self.path}: features are {self.dim}-d but the config says {dim}-d")


def resample(feats: np.ndarray, num_clips: int, mode: str = "mean", offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``[T, D]`` to ``[num_clips, D]`` and a validity mask.

    ``T >= num_clips``: ``mean`` averages the frames of each of ``num_clips`` bins with edges
    ``round(linspace(0, T, num_clips + 1))`` (MMN/VSLNet practice; an empty bin takes its single
    nearest frame), ``uniform`` takes frames ``round(linspace(0, T - 1, num_clips) + offset * step)``
    with ``step = (T - 1) / (num_clips - 1)``, clipped to ``[0, T - 1]``: ``offset`` (uniform mode
    only) shifts every sampled position by that fraction of a step (SSRN's siamese sampling: a
    random sub-step offset in training, ``0`` at test; ``+-0.5`` picks the frames half-way between
    the ``offset=0`` ones); the mask is all true. ``T < num_clips`` (short video): the ``T`` frames are kept in order, zero-padded,
    and the mask marks the first ``T`` clips; the valid prefix spans the whole duration, i.e. valid
    clip ``i`` of ``n`` covers the fractions ``[i/n, (i+1)/n)``; ``offset`` has nothing to shift then.
    """
    if feats.ndim != 2:
        raise ValueError(f"resample expects [T, D], got shape {feats.shape}")
    if mode not in ("mean", "uniform"):
        raise ValueError(f"resample mode must be 'mean' or 'uniform', got {mode!r}")
    if offset != 0.0 and mode != "uniform":
        raise ValueError(f"resample: offset={offset} applies to mode 'uniform' only (mode {mode!r})")
    if not np.isfinite(offset):
        raise ValueError(f"resample: offset must be finite, got {offset}")
    t, d = feats.shape
    out = np.zeros((num_clips, d), dtype=np.float32)
    mask = np.zeros(num_clips, dtype=bool)
    if t < num_clips:
        out[:t] = feats
        mask[:t] = True
        return out, mask
    mask[:] = True
    if mode == "uniform":
        pos = np.linspace(0, t - 1, num_clips)
        if offset != 0.0:
            pos = pos + offset * (t - 1) / max(num_clips - 1, 1)
        idx = np.clip(np.round(pos), 0, t - 1).astype(np.int64)
        return feats[idx].astype(np.float32, copy=True), mask
    edges = np.round(np.linspace(0, t, num_clips + 1)).astype(np.int64)
    csum = np.concatenate([np.zeros((1, d), dtype=np.float64), np.cumsum(feats, axis=0, dtype=np.float64)])
    lo, hi = edges[:-1], edges[1:]
    empty = hi <= lo
    hi = np.where(empty, np.minimum(lo + 1, t), hi)
    lo = np.where(empty, hi - 1, lo)
    out[:] = (csum[hi] - csum[lo]) / (hi - lo)[:, None]
    return out, mask
