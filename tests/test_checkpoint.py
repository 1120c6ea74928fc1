import pickle
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

import common.checkpoint as ck
from common.data import build_loader, set_epoch
from common.runtime import seed_everything


def _setup(seed=0):
    seed_everything(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(16, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    g = torch.Generator().manual_seed(123)
    x = torch.randn(40, 6, generator=g)
    y = x.sum(1, keepdim=True) + 0.1 * torch.randn(40, 1, generator=g)
    loader = build_loader(TensorDataset(x, y), 8, shuffle=True, seed=seed)
    return model, opt, sched, loader


def train(epochs, ckpt: Path, stop_after=None, resume=False):
    """A miniature train.py: shuffling, dropout (RNG), AdamW, a scheduler; checkpoint per epoch."""
    model, opt, sched, loader = _setup()
    start, step, losses = 0, 0, []
    if resume:
        st = ck.load_training_state(ckpt, model=model, optimizer=opt, scheduler=sched)
        start, step, losses = st["epoch"], st["step"], list(st["extra"]["losses"])
        seed_everything(999)  # a resumed process starts from a different RNG state...
        ck.restore_rng(st["rng"])  # ...which the checkpoint puts back
    for epoch in range(start, epochs):
        set_epoch(loader, epoch)
        for x, y in loader:
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            losses.append(loss.item())
        sched.step()
        ck.save_training_state(ckpt, model=model, optimizer=opt, scheduler=sched, epoch=epoch + 1, step=step,
                               extra={"losses": losses})
        if stop_after is not None and epoch + 1 == stop_after:
            return model, losses
    return model, losses


def test_resume_gives_identical_parameters_and_metrics(tmp_path):
    full, full_losses = train(6, tmp_path / "a.pt")
    train(6, tmp_path / "b.pt", stop_after=3)
    resumed, resumed_losses = train(6, tmp_path / "b.pt", resume=True)
    for p, q in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    assert resumed_losses == full_losses
    # without restoring state, the run diverges: the test can fail
    fresh, _ = train(3, tmp_path / "c.pt")
    assert not all(torch.equal(p, q) for p, q in zip(full.parameters(), fresh.parameters()))


def test_interrupted_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ck.atomic_save({"w": torch.ones(3)}, path)

    def crashing_save(obj, f):
        f.write(b"PARTIAL-GARBAGE" * 100)
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(ck.torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        ck.atomic_save({"w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(ck.safe_load(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):  # what a malicious checkpoint does: call a function at load time
        return (Path.touch, (Path(self.target),))


def test_weights_only_refuses_code_execution(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    torch.save({"model": _Payload(str(marker))}, bad)
    with pytest.raises(pickle.UnpicklingError):
        ck.safe_load(bad)
    assert not marker.exists()
    # the same object unpickled without weights_only's allow-list runs its payload (so the test can fail)
    pickle.loads(pickle.dumps({"model": _Payload(str(marker))}))  # noqa: S301
    assert marker.exists()


def test_missing_checkpoint_and_missing_state_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        ck.safe_load(tmp_path / "nope.pt")
    model = torch.nn.Linear(2, 2)
    ck.save_training_state(tmp_path / "m.pt", model=model)
    with pytest.raises(ValueError, match="no optimizer state"):
        ck.load_training_state(tmp_path / "m.pt", model=model, optimizer=torch.optim.SGD(model.parameters(), 0.1))
