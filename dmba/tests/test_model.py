"""The five victims: parameter counts pinned against their references, the component each paper
names (dilation, context module, attention, learned kernels), and ImageNet front-end loading."""

import functools
import re

import pytest
import torch
import torch.nn as nn

from common.config import load_config
from dmba.config import DEFAULTS
from dmba.model import (
    CAN,
    KDMG,
    MODELS,
    STRIDES,
    BayesianCC,
    CSRNet,
    KernelRefiner,
    PretrainedWeightsError,
    SFANet,
    build_model,
    frontend_of,
    load_frontend,
    n_params,
    param_groups,
)

# --------------------------------------------------------------------------- parameter counts

def test_csrnet_params_equal_reference():
    # leeyeehoo/CSRNet-pytorch@ed29d89 model.py: sum(p.numel()) of CSRNet()
    assert n_params(_meta(CSRNet)) == 16_263_489


def test_can_params_equal_reference():
    # weizheliu/Context-Aware-Crowd-Counting@d2e4d04 model.py CANNet: CSRNet's 16,263,489 + the
    # context module (4 x 512x512 scale convs without bias + ONE 512x512+512 weight net + a
    # 1024x512+512 bottleneck = 1,836,032) + the back-end's BatchNorm (2 x 1,984 = 3,968)
    assert n_params(_meta(CAN)) == 16_263_489 + 4 * 512 * 512 + (512 * 512 + 512) + (1024 * 512 + 512) + 2 * 1984
    assert n_params(_meta(CAN)) == 18_103_489


def test_sfanet_params_equal_reference():
    # pxq0312/SFANet-crowd-counting@38f46c3 models.py Model: VGG-16-BN convs (14,723,136 with BN) + two
    # BackEnds (2 x 1,139,424) + conv_att (33 + BN 2) + conv_out (33 + an unused BN 2) = 17,002,054,
    # counted layer by layer from that file; conv_out's BaseConv builds a BatchNorm it never applies.
    vgg16_bn = 14_714_688 + 2 * (2 * 64 + 2 * 128 + 3 * 256 + 6 * 512)
    backend = sum(i * o * k * k + o + 2 * o for i, o, k in
                  [(1024, 256, 1), (256, 256, 3), (512, 128, 1), (128, 128, 3), (256, 64, 1), (64, 64, 3), (64, 32, 3)])
    reference = vgg16_bn + 2 * backend + (33 + 2) + (33 + 2)
    assert reference == 17_002_054
    assert n_params(_meta(SFANet)) == reference - 2 == 17_002_052


def test_bayesian_params_equal_reference():
    # ZhihengCV/Bayesian-Crowd-Counting@5f10bfc models/vgg.py vgg19(): VGG-19 features + reg_layer
    assert n_params(_meta(BayesianCC)) == 21_499_457


def test_kdmg_params_equal_reference():
    # jia-wan/KDMG_Counting@6be3c5d: models/vgg.py vgg19() (as Bayesian CC) + models/Blur.py IndivBlur8(s=5)
    assert n_params(_meta(KernelRefiner, s=5)) == 269_657
    assert n_params(_meta(KDMG)) == 21_499_457 + 269_657


# --------------------------------------------------------------------------- outputs

@pytest.mark.parametrize("name", list(MODELS))
def test_outputs_are_dicts_at_the_stride(name):
    m = MODELS[name](width=0.125).eval()
    x = torch.randn(2, 3, 32, 48)
    out = m(x, points=[torch.tensor([[3.0, 4.0], [40.0, 20.0]]), torch.zeros(0, 2)])
    s = STRIDES[name]
    assert out["density"].shape == (2, 1, 32 // s, 48 // s)
    assert not any(isinstance(v, torch.Tensor) for k, v in vars(m).items() if not k.startswith("_"))  # nothing stashed


def test_bayesian_and_kdmg_counters_output_abs():
    for m in (BayesianCC(0.125), KDMG(0.125)):
        with torch.no_grad():
            m.eval()
            last = m.reg[-1] if isinstance(m, BayesianCC) else m.counter.reg[-1]
            last.bias.fill_(-5.0)  # a ReLU would output 0 here; abs gives ~5
            d = m(torch.randn(1, 3, 32, 32))["density"]
        assert (d > 1.0).all()


# --------------------------------------------------------------------------- named components

def test_csrnet_back_end_is_dilated():
    """Six 3x3 convs with dilation 2 reach 12 cells from a feature; without dilation only 6."""
    m = CSRNet(width=0.125)
    with torch.no_grad():
        for mod in m.backend.modules():
            if isinstance(mod, nn.Conv2d):
                mod.weight.fill_(0.01)
                mod.bias.zero_()
    ch = m.backend[0].in_channels
    f = torch.zeros(1, ch, 41, 41)
    f[0, :, 20, 20] = 1.0
    g = m.backend(f)[0].abs().sum(0)
    assert g[20, 20 + 12] > 0 and g[20 + 12, 20] > 0  # dilation 2: receptive radius 6 x 2 = 12 cells
    assert g[20, 20 + 13] == 0


def test_can_context_module_sees_beyond_the_local_receptive_field():
    """CAN's global average pooling makes a cell's density depend on pixels far outside CSRNet's
    receptive field (~300 px); CSRNet (or CAN without its context module) cannot."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 704)
    far = x.clone()
    far[..., 640:] += 1.0  # change only pixels >= 600 px right of the cells we read
    for model, depends in ((CAN(width=0.125, init="kaiming"), True), (CSRNet(width=0.125, init="kaiming"), False)):
        model.eval()
        with torch.no_grad():
            a, b = model(x)["density"][..., :4], model(far)["density"][..., :4]
        assert (not torch.allclose(a, b, atol=0, rtol=0)) is depends, type(model).__name__


def test_sfanet_attention_multiplies_the_density_features_before_the_output_conv():
    """Zero attention leaves only the output conv's bias (attention inside, no ReLU after)."""
    m = SFANet(width=0.125, init="kaiming").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        m.out_head.bias.fill_(-0.3)
        on = m(x)["density"]
        m.att_head[1].bias.fill_(-60.0)  # BN shift: sigmoid -> 0
        off = m(x)
    assert (on + 0.3).abs().max() > 1e-2  # with attention the features reach the output
    assert off["attention"].max() < 1e-6
    torch.testing.assert_close(off["density"], torch.full_like(off["density"], -0.3), atol=1e-5, rtol=0)


def test_kdmg_refiner_draws_each_head_with_its_learned_kernel():
    ref = KernelRefiner(s=5, width=0.125)
    k = torch.zeros(1, 25, 2, 3)
    k[0, :, 1, 2] = torch.arange(25.0) / 300.0  # the kernel of the stride-16 cell (row 1, col 2)
    target = ref.render(k, [torch.tensor([[44.0, 20.0]])], (4, 6), stride=8)  # head in stride-8 cell (2, 5)
    assert target.shape == (1, 1, 4, 6)
    # the 5x5 kernel centred on cell (2, 5), cut at the right and bottom borders (as the reference)
    expect = torch.zeros(4, 6)
    kern = (torch.arange(25.0) / 300.0).reshape(5, 5)
    expect[0:4, 3:6] = kern[0:4, 0:3]
    torch.testing.assert_close(target[0, 0], expect)


def test_kdmg_kernels_are_normalised_and_the_target_keeps_interior_counts():
    torch.manual_seed(0)
    m = KDMG(width=0.125).eval()
    pts = [torch.tensor([[30.0, 30.0], [33.0, 35.0], [20.0, 40.0]])]
    out = m(torch.randn(1, 3, 64, 64), points=pts)
    torch.testing.assert_close(out["kernels"].sum(1), torch.ones(1, 4, 4))
    assert float(out["target"].detach().sum()) == pytest.approx(3.0, rel=1e-5)  # interior heads: nothing is cut
    assert out["target"].requires_grad  # the loss reaches the refiner


def test_kdmg_refiner_gets_its_own_learning_rate():
    cfg = load_config(None, ["model.name=kdmg", "optim.refiner_lr=0.5"], DEFAULTS)
    m = KDMG(width=0.125)
    groups = param_groups(m, cfg)
    assert groups[1]["lr"] == 0.5 and sum(p.numel() for p in groups[1]["params"]) == n_params(m.refiner)
    assert sum(p.numel() for g in groups for p in g["params"]) == n_params(m)


# --------------------------------------------------------------------------- ImageNet front-ends

@functools.cache
def _fake_vgg(kind: str) -> dict:
    """A state dict with torchvision's VGG ``features.*`` layout (its own make_layers; random values)."""
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(1)
    feats = make_layers(cfgs["E" if kind.startswith("vgg19") else "D"], batch_norm=kind.endswith("_bn"))
    for mod in feats.modules():
        if isinstance(mod, nn.BatchNorm2d):  # make the statistics visible
            mod.running_mean.uniform_(-1, 1)
            mod.running_var.uniform_(0.5, 2)
            mod.weight.data.uniform_(0.5, 1.5)
    return {f"features.{k}": v for k, v in feats.state_dict().items()}


def _meta(cls, **kw):
    with torch.device("meta"):  # counting needs no memory and no initialisation
        return cls(**kw)


def test_sfanet_loads_vgg16_bn_convs_and_batchnorm_statistics(tmp_path):
    sd = _fake_vgg("vgg16_bn")
    path = tmp_path / "vgg16_bn-6c64b313.pth"
    torch.save(sd, path)
    m = SFANet()
    assert "13 conv" not in load_frontend(m, str(path))
    convs = [x for x in frontend_of(m).modules() if isinstance(x, nn.Conv2d)]
    bns = [x for x in frontend_of(m).modules() if isinstance(x, nn.BatchNorm2d)]
    assert len(convs) == len(bns) == 13
    torch.testing.assert_close(convs[0].weight, sd["features.0.weight"])
    torch.testing.assert_close(bns[0].running_mean, sd["features.1.running_mean"])
    torch.testing.assert_close(bns[12].running_var, sd["features.41.running_var"])
    torch.testing.assert_close(bns[12].weight, sd["features.41.weight"])


def test_csrnet_takes_the_first_ten_vgg16_convs_and_imagenet_resolves_offline(tmp_path, monkeypatch):
    sd = _fake_vgg("vgg16")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # torchvision's cache: a file there is used, no download
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(sd, tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth")
    cfg = load_config(None, ["model.pretrained=imagenet"], DEFAULTS)
    m = build_model(cfg)
    convs = [x for x in m.frontend.modules() if isinstance(x, nn.Conv2d)]
    assert len(convs) == 10
    torch.testing.assert_close(convs[9].weight, sd["features.21.weight"])  # conv4_3
    torch.testing.assert_close(convs[9].bias, sd["features.21.bias"])


def test_bayesian_takes_vgg19(tmp_path):
    sd = _fake_vgg("vgg19")
    path = tmp_path / "v.pth"
    torch.save(sd, path)
    m = BayesianCC()
    load_frontend(m, str(path))
    torch.testing.assert_close(m.features[-2].weight, sd["features.34.weight"])  # conv5_4


def test_unreachable_weights_name_both_options(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(PretrainedWeightsError) as e:
        load_frontend(_meta(CSRNet), "imagenet")  # fails before any weight is touched
    msg = str(e.value)
    assert "VGG16_Weights.IMAGENET1K_V1" in msg and "model.pretrained=/path/to/vgg16-397923af.pth" in msg
    assert "network is unreachable" in msg
    with pytest.raises(PretrainedWeightsError, match=re.escape("model.pretrained=imagenet")):
        load_frontend(_meta(SFANet), str(tmp_path / "missing.pth"))
    with pytest.raises(PretrainedWeightsError, match="VGG16_BN_Weights"):
        load_frontend(_meta(SFANet), str(tmp_path / "missing.pth"))


def test_wrong_weights_are_refused(tmp_path):
    path = tmp_path / "v.pth"
    torch.save(_fake_vgg("vgg16"), path)
    with pytest.raises(PretrainedWeightsError, match="_BN weights"):
        load_frontend(_meta(SFANet), str(path))  # conv where a BN is expected
    with pytest.raises(PretrainedWeightsError, match="model.width=1.0"):
        load_frontend(_meta(CSRNet, width=0.5), str(path))
