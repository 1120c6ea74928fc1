"""2-process DDP on CPU (gloo) gives the same parameters as 1 process on the same global batch."""

import os
import socket

import torch
import torch.multiprocessing as mp
from torch.utils.data import TensorDataset

from common.data import build_loader, set_epoch
from common.runtime import DistInfo, cleanup_distributed, init_distributed, seed_everything, wrap_ddp

GLOBAL_BATCH = 8


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g)
    return TensorDataset(x, x @ torch.arange(1.0, 6.0).unsqueeze(1))


def _train(info: DistInfo, device):
    seed_everything(0)  # same init on every rank (DDP also broadcasts rank 0's parameters)
    model = wrap_ddp(torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)), info, device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = build_loader(_data(), GLOBAL_BATCH // info.world_size, shuffle=True, seed=7, dist=info)
    for epoch in range(3):
        set_epoch(loader, epoch)
        for x, y in loader:
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    m = model.module if hasattr(model, "module") else model
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def _worker(rank, world, port, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    info, device = init_distributed("cpu")
    assert info.world_size == world and torch.distributed.get_backend() == "gloo"
    params = _train(info, device)
    if rank == 0:
        torch.save(params, out)
    cleanup_distributed()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_matches_single_process(tmp_path):
    out = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=True)
    single = _train(DistInfo(), torch.device("cpu"))
    assert torch.allclose(ddp, single, atol=1e-5), (ddp - single).abs().max()
