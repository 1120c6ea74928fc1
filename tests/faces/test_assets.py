"""Real face assets (common/faces/assets.py). Each test skips with the loader's install hint when
the extras (requirements.txt / requirements-nodeps.txt) are not installed."""

import importlib

import numpy as np
import pytest

from common.faces import assets as A


def _or_skip(fn, *args):
    try:
        return fn(*args)
    except A.MissingAsset as e:
        pytest.skip(str(e))


def test_missing_package_error_names_package_and_install_line(monkeypatch):
    real = importlib.import_module

    def fake(name, *a):
        if name.startswith(("skimage", "facenet_pytorch")):
            raise ImportError(f"No module named {name!r}")
        return real(name, *a)

    monkeypatch.setattr(A.importlib, "import_module", fake)
    with pytest.raises(A.MissingAsset, match=r"scikit-image.*pip install scikit-image==0\.26\.0"):
        A.lfw_subset()
    with pytest.raises(A.MissingAsset, match=r"facenet-pytorch.*pip install --no-deps facenet-pytorch==2\.6\.0"):
        A.MTCNNDetector()


def test_lfw_subset_shapes():
    imgs, labels = _or_skip(A.lfw_subset)
    assert imgs.shape == (200, 25, 25) and imgs.dtype == np.float64 and 0 <= imgs.min() <= imgs.max() <= 1
    assert labels.tolist() == [1] * 100 + [0] * 100


def test_haar_finds_the_astronaut():
    img, cascade = _or_skip(A.astronaut), _or_skip(A.haar_frontal)
    import cv2

    boxes = cascade.detectMultiScale(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), 1.1, 5)
    assert len(boxes) == 1 and np.abs(boxes[0] - [177, 66, 95, 95]).max() <= 3


def test_mtcnn_astronaut_box():
    img = _or_skip(A.astronaut)
    det = _or_skip(A.mtcnn).detect(img)
    assert det.boxes.dtype == np.float64 and det.points.shape == (1, 5, 2) and det.probs[0] > 0.99
    assert np.abs(det.boxes[0] - [181, 62, 268, 172]).max() <= 2
    eyes, nose, mouth = det.points[0, :2], det.points[0, 2], det.points[0, 3:]
    assert eyes[0, 0] < nose[0] < eyes[1, 0] and mouth[0, 0] < mouth[1, 0] and eyes[:, 1].max() < nose[1] < mouth[:, 1].min()


def test_mobilenet_v2_loads_all_keys_and_sees_a_cat():
    import torch
    import torch.nn.functional as F

    model, img = _or_skip(A.mobilenet_v2), _or_skip(A.chelsea)  # load_state_dict(strict=True): all keys matched
    x = F.interpolate(torch.tensor(img).permute(2, 0, 1)[None].float() / 255, size=(224, 224), mode="bilinear",
                      antialias=True)
    x = (x - torch.tensor(A.IMAGENET_MEAN)[:, None, None]) / torch.tensor(A.IMAGENET_STD)[:, None, None]
    with torch.no_grad():
        top = int(model(x).argmax())
    assert 281 <= top <= 285  # ImageNet cats: tabby, tiger cat, Persian, Siamese, Egyptian
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        A.mobilenet_v2("/nonexistent/mobilenet_v2.pth")


def test_carphone_frames():
    frames = _or_skip(A.carphone_frames)
    assert frames.shape == (120, 144, 176, 3) and frames.dtype == np.uint8 and frames.std() > 20


@pytest.mark.slow
def test_carphone_detections_cached(tmp_path):
    det = _or_skip(A.carphone_detections, tmp_path)
    assert det.boxes.shape == (120, 4) and (det.probs >= 0.98).all()
    again = A.carphone_detections(tmp_path)  # from the cache
    np.testing.assert_array_equal(again.boxes, det.boxes)
