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


def _net():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    net(torch.ones(2, 3)).sum().backward()
    return net


def test_check_step_passes_a_finite_step_and_names_the_first_bad_gradient():
    from common.runtime import NonFiniteError, check_step

    net = _net()
    check_step({"loss": torch.tensor(0.5), "aux": torch.tensor(1.0)}, net, step=3, epoch=0)
    net[2].weight.grad[0, 1] = float("nan")
    net[2].bias.grad[0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"non-finite gradient at epoch 0 step 3 \(loss 0.5 is finite\): "
                                             r"gradient of 2.weight \(shape \(1, 4\): 1 NaN, 0 Inf of 4\)"):
        check_step(torch.tensor(0.5), net, step=3, epoch=0)


def test_check_step_names_a_bad_parameter_and_a_bad_loss_with_its_parts():
    from common.runtime import NonFiniteError, check_step

    net = _net()
    with torch.no_grad():
        net[0].bias[2] = float("-inf")
    with pytest.raises(NonFiniteError, match=r"non-finite parameter at step 9: 0.bias \(shape \(4,\): 0 NaN, 1 Inf"):
        check_step(1.0, net, step=9)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at epoch 1 step 2. components: "
                                                 r"loss=nan, ground=1"):
        check_step({"loss": torch.tensor(float("nan")), "ground": torch.tensor(1.0)}, net, step=2, epoch=1)


def test_check_step_leaves_fp16_overflow_to_an_enabled_grad_scaler():
    from common.runtime import check_step

    class Scaler:
        def is_enabled(self):
            return True

    net = _net()
    net[0].weight.grad[0, 0] = float("inf")  # an fp16 overflow: the scaler skips this step itself
    check_step(torch.tensor(1.0), net, step=0, scaler=Scaler())
