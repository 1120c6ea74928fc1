import random

import numpy as np
import pytest
import torch

from common.runtime import NonFiniteLossError, autocast, check_finite, make_grad_scaler, resolve_device, seed_everything


def test_resolve_device_cpu_and_auto():
    assert resolve_device("cpu").type == "cpu"
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_explicit_cuda_without_cuda_is_an_error():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        resolve_device("cuda:0")


def test_seed_everything_reproduces_all_generators():
    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    seed_everything(3)
    a = draw()
    seed_everything(3)
    assert draw() == a
    seed_everything(3, rank=1)
    assert draw() != a


def test_check_finite_raises_with_context():
    check_finite(torch.tensor(1.5), step=3)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2 step 7.*grounding=nan.*last good checkpoint"):
        check_finite(torch.tensor(float("nan")), step=7, epoch=2, parts={"grounding": float("nan")})
    with pytest.raises(NonFiniteLossError):
        check_finite(float("inf"), step=0)


def test_amp_switch_off_is_noop_and_on_is_bf16_on_cpu():
    dev = torch.device("cpu")
    x = torch.randn(4, 4)
    with autocast(dev, False):
        assert (x @ x).dtype == torch.float32
    with autocast(dev, True):
        assert (x @ x).dtype == torch.bfloat16
    assert not make_grad_scaler(dev, True).is_enabled()
