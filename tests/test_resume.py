"""Exact resume after SIGKILL mid-epoch (1 process and 2-process gloo DDP), the NaN guard on the
last step of an epoch, and errors reaching train.log — on the toy project (tests/toy.py), through
common.testing like every project's own tests."""

import pytest
import torch

from common.checkpoint import safe_load
from common.testing import checkpoints, compare_states, kill_and_resume, read_jsonl, run_module

ARGS = ["--device", "cpu", "--no-tb", "--seed", "3"]
STEPS_PER_EPOCH = 12  # 96 records, batch 8 per process (1 process); 6 per epoch with 2 processes


def test_sigkill_mid_epoch_then_resume_is_exact_one_process(tmp_path):
    # step 17: epoch 1 (0-based) is 5 steps in, its checkpoint (epoch 1 done, step 12) exists;
    # two DataLoader workers draw per-record noise
    res = kill_and_resume("tests.toy", [*ARGS, "--set", "data.workers=2"], kill_at_step=17, workdir=tmp_path)
    assert (res.checkpoint_epoch, res.checkpoint_step) == (1, 12)
    assert res.identical == res.total == 4 and res.optimizer_identical == res.optimizer_total == 4, res.summary()
    assert res.metrics_equal, res.summary()
    assert len(read_jsonl(res.resumed.parent.parent / "metrics.jsonl")) == 4


def test_sigkill_mid_epoch_then_resume_is_exact_under_ddp(tmp_path):
    # 2 ranks x 6 steps per epoch; step 9 is mid-epoch 1, after the epoch-1 checkpoint (step 6)
    res = kill_and_resume("tests.toy", ARGS, kill_at_step=9, nproc=2, workdir=tmp_path, resume="auto")
    print(res.summary())
    assert (res.checkpoint_epoch, res.checkpoint_step) == (1, 6)
    assert res.identical == res.total == 4, res.summary()
    assert res.optimizer_identical == res.optimizer_total, res.summary()
    assert res.metrics_equal, res.summary()
    st = safe_load(res.resumed)
    assert st["world_size"] == 2 and len(st["rng"]) == 2
    assert not torch.equal(st["rng"][0]["torch"], st["rng"][1]["torch"])  # each rank's own stream is kept


def test_nan_gradient_on_last_step_of_epoch_keeps_previous_checkpoint(tmp_path):
    import tests.toy as toy

    args = [*ARGS, "--set", "train.schedule=constant"]  # so epoch 1 does not depend on the number of epochs
    good = tmp_path / "good"
    assert toy.main([*args, "--runs-root", str(good), "--set", "train.epochs=1"]) == 0
    poisoned = tmp_path / "poisoned"
    last_step_of_epoch_2 = 2 * STEPS_PER_EPOCH - 1  # the loss stays finite; one gradient entry is NaN
    proc = run_module("tests.toy", [*args, "--runs-root", str(poisoned), "--set", "train.epochs=3",
                                    "--set", f"train.poison_grad_step={last_step_of_epoch_2}"], check=False)
    assert proc.returncode != 0
    assert "non-finite gradient at epoch 1 step 23" in proc.stderr and "gradient of 0.weight" in proc.stderr
    (ckpt,) = checkpoints(poisoned)
    kept, ref = safe_load(ckpt), safe_load(checkpoints(good)[0])
    assert kept["epoch"] == 1 and kept["step"] == STEPS_PER_EPOCH
    for key in ("model", "optimizer"):
        same, total, diff = compare_states(kept, ref, key)
        assert same == total and total > 0, (key, diff)
    run_dir = ckpt.parent.parent
    log = (run_dir / "train.log").read_text()  # the error escaping training reaches train.log
    assert "training stopped: NonFiniteError" in log and "0.weight" in log and "Traceback" in log
    assert f"The last good checkpoint is kept: {ckpt} (epoch 1, step 12)" in log
    assert log.index("data: 96 records checked") < log.index("run dir")  # logged before open(), replayed
    assert not (run_dir / "run.lock").exists()  # the lock went with the process


@pytest.mark.parametrize("bad,msg", [("train.epochs=-1", "out of range; valid: >= 1"),
                                     ("train.schedule=linear", "valid: cosine | constant"),
                                     ("model.dropout=null", "does not accept null")])
def test_bad_config_fails_before_anything_is_written(tmp_path, bad, msg):
    import tests.toy as toy
    from common.config import ConfigError

    with pytest.raises(ConfigError, match=msg):
        toy.main([*ARGS, "--runs-root", str(tmp_path), "--set", bad])
    assert list(tmp_path.iterdir()) == []
