import pytest
import torch

from migperf.workloads import build_model, make_workload

CPU = torch.device("cpu")


def test_encoder_shapes_match_published_parameter_counts():
    bert = build_model("bert_base")
    head = sum(p.numel() for p in bert.head.parameters())
    assert sum(p.numel() for p in bert.parameters()) - head == 109_482_240   # bert-base-uncased
    assert sum(p.numel() for p in build_model("distilbert").parameters()) == 66_955_010  # DistilBertForSeqCls
    with pytest.raises(ValueError, match="unknown model 'gpt2'"):
        build_model("gpt2")


def test_inference_is_eval_and_no_grad():
    wl = make_workload("resnet18", 2, "inference", CPU, image_size=32, num_classes=5)
    out = wl.step()
    assert out.shape == (2, 5) and not out.requires_grad and not wl.model.training
    assert torch.is_inference(out)
    # eval mode: BatchNorm running stats are not touched by inference
    bn = wl.model.bn1.running_mean.clone()
    wl.step()
    assert torch.equal(bn, wl.model.bn1.running_mean)


def test_train_step_updates_and_reports_loss():
    wl = make_workload("distilbert", 2, "train", CPU, seq_len=8)
    w0 = wl.model.head.weight.detach().clone()
    assert wl.last_loss() is None
    wl.step()
    assert wl.model.training and not torch.equal(w0, wl.model.head.weight)
    assert 0.0 < wl.last_loss() < 5.0
    with pytest.raises(ValueError, match="mode must be"):
        make_workload("resnet18", 1, "serve", CPU)
    with pytest.raises(ValueError, match="optimizer must be"):
        make_workload("resnet18", 1, "train", CPU, image_size=32, optimizer="lamb")


def test_amp_and_channels_last_run_on_cpu():
    wl = make_workload("mobilenet_v2", 2, "inference", CPU, image_size=32, num_classes=3, amp=True, channels_last=True)
    out = wl.step()
    assert out.dtype == torch.bfloat16 and wl.inputs.is_contiguous(memory_format=torch.channels_last)


def test_pinned_input_copies_each_batch_inside_the_step():
    wl = make_workload("resnet18", 2, "inference", CPU, image_size=32, num_classes=5, input_mode="pinned")
    assert wl.copy_bytes == 2 * 3 * 32 * 32 * 4 and wl.input_mode == "pinned"
    wl.inputs.zero_()                          # the device-side buffer is refilled by every step
    wl.step()
    assert wl.inputs.abs().sum() > 0
    dev = make_workload("resnet18", 2, "inference", CPU, image_size=32, num_classes=5, max_samples=6)
    assert dev.copy_bytes == 0 and dev.inputs.shape[0] == 6 and dev.step_n(5).shape == (5, 5)
    with pytest.raises(ValueError, match="input must be"):
        make_workload("resnet18", 1, "inference", CPU, input_mode="gpu")
