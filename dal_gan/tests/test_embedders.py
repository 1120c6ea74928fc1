"""The two identity networks: the generator is never graded by the network it optimised (another
architecture, seed and colour augmentation), and the colour jitter of the matcher is real."""

from pathlib import Path

import torch

from common.checkpoint import safe_load
from dal_gan.embedders import colour_jitter, embedder_path, load_embedder
from dal_gan.tests.conftest import tiny_cfg


def test_eval_matcher_is_independent_of_the_identity_loss_embedder(world):
    _, runs = world
    cfg = tiny_cfg()
    lp, ep = embedder_path(cfg, "loss", runs), embedder_path(cfg, "eval", runs)
    assert lp != ep and lp.name == "loss.pt" and ep.name == "eval.pt"
    li, ei = safe_load(lp)["info"], safe_load(ep)["info"]
    assert li["which"] == "loss" and ei["which"] == "eval" and li["seed"] != ei["seed"]
    lm, em = load_embedder(lp), load_embedder(ep)
    assert (lm.arch, em.arch) == (cfg.embedders.loss_arch, cfg.embedders.eval_arch) and lm.arch != em.arch
    x = torch.rand(4, 3, 32, 32)
    assert not torch.allclose(lm(x), em(x), atol=1e-3)
    # eval's default matcher is the eval embedder; a path in eval.matcher replaces it
    assert embedder_path(tiny_cfg("eval.matcher=/x/vggface.ts"), "eval", runs) == Path("/x/vggface.ts")


def test_colour_jitter_changes_colour_and_keeps_geometry():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(8, 3, 16, 16)
    x[:, :, 4:8, 4:8] = torch.tensor([0.9, 0.3, 0.2]).view(1, 3, 1, 1)
    y = colour_jitter(x, 0.4, g)
    assert y.shape == x.shape and not torch.allclose(y, x)
    inside, outside = y[:, :, 4:8, 4:8], y[:, :, 10:, 10:]
    assert (inside.mean((1, 2, 3)) != outside.mean((1, 2, 3))).all()     # the square is still where it was


def test_a_default_path_embedder_trained_on_other_data_is_retrained(world, tmp_path, caplog):
    """The default-path embedders are keyed by dataset folder and size; a rewritten dataset (a new
    embedded world) must not reuse them silently: the training fingerprint differs, so they retrain."""
    import logging
    import os
    import shutil

    from dal_gan.data import load_data
    from dal_gan.embedders import ensure_embedders, training_fingerprint

    root, runs = world
    cfg = tiny_cfg()
    data = load_data(cfg, root)
    lp = embedder_path(cfg, "loss", runs)
    fp = safe_load(lp)["info"]["fingerprint"]
    assert fp == training_fingerprint(cfg, data)
    runs2 = tmp_path / "runs"
    shutil.copytree(lp.parent, embedder_path(cfg, "loss", runs2).parent)
    with caplog.at_level(logging.INFO, "dal_gan.embedders"):
        ensure_embedders(cfg, data, runs2, which=("loss",))
    assert "(exists)" in caplog.text and "retraining" not in caplog.text
    first = data.visible_train[0][1].path                                # one training image rewritten later
    st = os.stat(first)
    try:
        os.utime(first, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        assert training_fingerprint(cfg, data) != fp
        caplog.clear()
        with caplog.at_level(logging.INFO, "dal_gan.embedders"):
            ensure_embedders(cfg, data, runs2, which=("loss",))
        assert "retraining" in caplog.text
        assert safe_load(embedder_path(cfg, "loss", runs2))["info"]["fingerprint"] == training_fingerprint(cfg, data)
    finally:
        os.utime(first, ns=(st.st_atime_ns, st.st_mtime_ns))
