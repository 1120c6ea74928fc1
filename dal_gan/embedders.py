"""Train the two identity embedders on the training subjects' visible images.

    python -m dal_gan.embedders                          # embedded set: both, unless they exist
    python -m dal_gan.embedders --config dal_gan/configs/arl_vtf.yaml --data-root /data [--force]

No face-recognition weights install offline (VGG-Face, LightCNN, ArcFace all download), so two small
embedders are trained here (RECONSTRUCTED): ``loss.pt``, frozen inside DAL-GAN's identity loss, and
``eval.pt``, the verification matcher of ``dal_gan.eval``, trained independently (another seed,
another architecture, colour-jittered and randomly grey so it keys on geometry rather than on skin
and hair colour, which thermal cannot see): the generator is never graded by the network it
optimised. Both go to ``runs/dal_gan/embedders/<data.dir>-split<k>-<size>px/`` unless the config names
paths (``identity.embedder``; ``eval.matcher`` also takes a user's TorchScript VGG-Face/LightCNN).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common.checkpoint import atomic_save, load_state_into, safe_load
from common.run import runs_root
from common.runtime import seed_everything
from dal_gan.data import FaceData, Image, ImageStore
from dal_gan.model import Embedder

log = logging.getLogger("dal_gan.embedders")
MARGIN = 0.2   # RECONSTRUCTED: CosFace additive cosine margin (Wang et al. 2018 use 0.35 at scale 64)


def default_dir(cfg, runs: str | Path | None = None) -> Path:
    return runs_root(runs) / "dal_gan" / "embedders" / f"{cfg.data.dir}-split{cfg.data.split}-{cfg.data.size}px"


def embedder_path(cfg, which: str, runs: str | Path | None = None) -> Path:
    """The loss embedder (``identity.embedder``) or the evaluation matcher (``eval.matcher``)."""
    given = cfg.identity.embedder if which == "loss" else cfg.eval.matcher
    return Path(given) if given else default_dir(cfg, runs) / f"{which}.pt"


def load_embedder(path: str | Path) -> Embedder:
    """An embedder written by :func:`save_embedder` (``weights_only`` load), in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"identity embedder {path} not found: train it with `python -m dal_gan.embedders "
                                f"--config <the same config>` (make -C dal_gan embedders), or set identity.embedder / "
                                f"eval.matcher to a checkpoint")
    state = safe_load(path)
    if not isinstance(state, dict) or "spec" not in state:
        raise ValueError(f"{path}: not a dal_gan embedder checkpoint (no 'spec'); a TorchScript matcher must end "
                         f"in .ts or .torchscript")
    m = Embedder(**state["spec"])
    load_state_into(m, state["model"], path, "model")
    return m.eval()


def save_embedder(m: Embedder, path: Path, info: dict) -> Path:
    sd = {k: v for k, v in m.state_dict().items() if k != "head"}
    return atomic_save({"spec": m.spec(), "model": sd, "info": info}, path)


def colour_jitter(x: torch.Tensor, strength: float, g: torch.Generator) -> torch.Tensor:
    """Per-image brightness, contrast, saturation and channel-gain jitter, then grey with p 0.3."""
    b = x.shape[0]
    u = lambda *s: torch.rand(*s, generator=g) * 2 - 1  # noqa: E731
    grey = x.mean(1, keepdim=True)
    x = grey + (x - grey) * (1 + strength * u(b, 1, 1, 1)).clamp(min=0)               # saturation
    x = x * (1 + 0.5 * strength * u(b, 3, 1, 1))                                        # channel gains (hue-ish)
    m = x.mean((1, 2, 3), keepdim=True)
    x = m + (x - m) * (1 + strength * u(b, 1, 1, 1))                                    # contrast
    x = x * (1 + strength * u(b, 1, 1, 1))                                              # brightness
    to_grey = (torch.rand(b, 1, 1, 1, generator=g) < 0.3).float()
    x = to_grey * x.mean(1, keepdim=True).expand_as(x) + (1 - to_grey) * x
    return x.clamp(0, 1)


def shift(x: torch.Tensor, px: int, g: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``px`` pixels (replicate padding, per image)."""
    b, _, h, w = x.shape
    pad = F.pad(x, (px, px, px, px), mode="replicate")
    dx, dy = (torch.randint(0, 2 * px + 1, (2, b), generator=g)).tolist()
    return torch.stack([pad[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])


def train_embedder(which: str, cfg, images: torch.Tensor, labels: torch.Tensor, n_classes: int,
                   val: tuple[torch.Tensor, list[str]] | None = None) -> tuple[Embedder, dict]:
    """CosFace-trained embedder on (N, 3, H, W) images in [0, 1] with integer labels."""
    e = cfg.embedders
    seed = e.loss_seed if which == "loss" else e.eval_seed
    seed_everything(seed)
    g = torch.Generator().manual_seed(seed)
    m = Embedder(e.loss_arch if which == "loss" else e.eval_arch, e.width, e.dim, n_classes)
    opt = torch.optim.Adam(m.parameters(), lr=e.lr)
    n = len(images)
    steps = e.epochs * math.ceil(n / e.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    m.train()
    t0, losses = time.perf_counter(), []
    for _ in range(e.epochs):
        perm = torch.randperm(n, generator=g)
        tot = 0.0
        for i in range(0, n, e.batch_size):
            idx = perm[i:i + e.batch_size]
            x = shift(images[idx], max(1, images.shape[-1] // 16), g)
            if which == "eval" and e.eval_jitter > 0:
                x = colour_jitter(x, e.eval_jitter, g)
            cos = m(x) @ F.normalize(m.head, dim=1).t()
            y = labels[idx]
            logits = e.scale * (cos - MARGIN * F.one_hot(y, n_classes))
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
        losses.append(tot / n)
    m.eval()
    info = {"which": which, "seed": seed, "epochs": e.epochs, "n_images": n, "n_classes": n_classes,
            "final_loss": losses[-1], "train_s": time.perf_counter() - t0}
    if val is not None:
        info["val_AUC"] = verification_auc(m, *val)
    return m, info


@torch.no_grad()
def embed(m, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return torch.cat([m(x[i:i + batch]) for i in range(0, len(x), batch)])


def verification_auc(m, x: torch.Tensor, subjects: list[str]) -> float:
    """AUC (%) of all-pairs cosine verification among ``x`` (each pair once)."""
    from dal_gan.metrics import auc

    e = embed(m, x)
    s = (e @ e.t()).numpy()
    same = np.array([[a == b for b in subjects] for a in subjects])
    iu = np.triu_indices(len(subjects), 1)
    return 100 * auc(s[iu], same[iu])


def visible_sets(data: FaceData, store: ImageStore) -> tuple[torch.Tensor, torch.Tensor, tuple | None]:
    """Training images + labels (visible frames of the training subjects) and the validation
    subjects' visible frontals (target + other frontals) for the AUC check."""
    labels = data.label
    x = store.tensor([im for _, im in data.visible_train])
    y = torch.tensor([labels[s] for s, _ in data.visible_train])
    val_subj = sorted({s.subject for s in data.val})
    ims: list[tuple[str, Image]] = [(s, im) for s in val_subj for im in [data.targets[s], *data.frontals.get(s, [])]]
    val = (store.tensor([im for _, im in ims]), [s for s, _ in ims]) if len(val_subj) > 1 else None
    return x, y, val


def training_fingerprint(cfg, data: FaceData) -> str:
    """What a default-path embedder was trained from: the embedder settings, the image size and every
    training image (path, size in bytes, modification time). A rewritten dataset (e.g. a new embedded
    world) changes it, so a stale embedder is retrained instead of silently reused."""
    import hashlib
    import json

    h = hashlib.sha256(json.dumps([dict(cfg.embedders), cfg.data.size, cfg.data.box_margin], sort_keys=True).encode())
    for s, im in data.visible_train:
        st = Path(im.path).stat()
        h.update(f"{s}|{im.path}|{im.box}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def ensure_embedders(cfg, data: FaceData, runs: str | Path | None = None, force: bool = False,
                     which: tuple[str, ...] = ("loss", "eval")) -> dict[str, Path]:
    """Train whichever default-path embedder is missing or stale (trained from other images or settings:
    ``training_fingerprint``), or all with ``force``; returns the paths. A path named in the config is
    used as it is."""
    store = ImageStore(cfg.data.size, cfg.data.box_margin)
    out, sets, fp = {}, None, None
    for w in which:
        path = embedder_path(cfg, w, runs)
        out[w] = path
        if cfg.identity.embedder if w == "loss" else cfg.eval.matcher:      # named in the config: as it is
            if not path.exists():
                raise FileNotFoundError(f"{w} embedder {path} (named in the config) does not exist")
            log.info("%s embedder: %s (named in the config)", w, path)
            continue
        fp = fp or training_fingerprint(cfg, data)
        if path.exists() and not force:
            was = safe_load(path).get("info", {}).get("fingerprint")
            if was == fp:
                log.info("%s embedder: %s (exists)", w, path)
                continue
            log.info("%s embedder %s was trained on other data or settings (fingerprint %s, now %s): retraining",
                     w, path, was, fp)
        sets = sets or visible_sets(data, store)
        m, info = train_embedder(w, cfg, sets[0], sets[1], len(data.train_subjects), sets[2])
        info["fingerprint"] = fp
        save_embedder(m, path, info)
        log.info("%s embedder -> %s (%s)", w, path, ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                             for k, v in info.items()))
    return out


def main(argv=None) -> int:
    from common.cli import tool_parser
    from common.config import load_config
    from dal_gan.config import DEFAULTS, RULES
    from dal_gan.data import load_data

    ap = tool_parser(__doc__, "dal_gan")
    ap.add_argument("--runs-root", default=None)
    ap.add_argument("--which", nargs="+", default=["loss", "eval"], choices=["loss", "eval"])
    ap.add_argument("--force", action="store_true", help="retrain even if the checkpoint exists")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = load_config(a.config, a.overrides, DEFAULTS, RULES)
    data = load_data(cfg, a.data_root, log_=log)
    for w, p in ensure_embedders(cfg, data, a.runs_root, a.force, tuple(a.which)).items():
        print(f"{w}: {p} {safe_load(p).get('info', {})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
