"""Benchmark workloads on synthetic inputs (nothing is downloaded).

CV: torchvision ResNet-18/50, MobileNetV2, ViT-B/16 (random init, ``weights=None``).
NLP: a BERT-base-shaped and a DistilBERT-shaped encoder built here from ``nn.TransformerEncoder``
(12 / 6 layers, hidden 768, 12 heads, FFN 3072, vocab 30522, 512 positions). Without the 2-class
head BERT-base has 109,482,240 parameters (``bert-base-uncased``); DistilBERT with its head has
66,955,010 (``DistilBertForSequenceClassification``).

Training: SGD (momentum 0.9, wd 1e-4) for CV and AdamW (wd 0.01) for NLP, as the original tool;
CrossEntropy loss. Inference: ``model.eval()`` and ``torch.inference_mode()`` (the original timed
inference in train mode with autograd on). Optional bf16 autocast (``amp``) and channels-last.

Input modes (``input``): ``device`` (default) keeps one synthetic batch on the device, so no copy
is timed; ``pinned`` / ``pageable`` keep it in (page-locked / ordinary) host memory and copy it to
the device inside every timed step (``non_blocking`` from pinned memory), because PCIe is one of
the two resources MIG does not isolate (NVIDIA MIG user guide, "Application Considerations").
On a CPU device both copy host to host (there is no PCIe to cross; pinning needs CUDA).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from common.runtime import autocast, make_grad_scaler

CV_MODELS = ("resnet18", "resnet50", "mobilenet_v2", "vit_b_16")  # torchvision.models builders
NLP_MODELS = {"bert_base": 12, "distilbert": 6}
MODELS = (*CV_MODELS, *NLP_MODELS)


class EncoderClassifier(nn.Module):
    """BERT-shaped encoder: token + position + segment embeddings, LayerNorm, post-norm GELU
    Transformer layers, a tanh pooler on the first token (BERT) and a linear classifier."""

    def __init__(self, layers: int, hidden: int = 768, heads: int = 12, ffn: int = 3072, vocab: int = 30522,
                 max_pos: int = 512, num_classes: int = 2, pooler: bool = True, dropout: float = 0.1):
        super().__init__()
        self.tok = nn.Embedding(vocab, hidden)
        self.pos = nn.Embedding(max_pos, hidden)
        self.seg = nn.Embedding(2, hidden) if pooler else None  # DistilBERT drops token types
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(hidden, heads, ffn, dropout, activation="gelu", batch_first=True,
                                           layer_norm_eps=1e-12)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.pool = nn.Linear(hidden, hidden)
        self.pool_act = nn.Tanh() if pooler else nn.ReLU()  # DistilBERT: pre_classifier + ReLU
        self.head = nn.Linear(hidden, num_classes)
        self.max_pos = max_pos

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[1] > self.max_pos:
            raise ValueError(f"sequence length {ids.shape[1]} > {self.max_pos} positions")
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.tok(ids) + self.pos(pos)[None]
        if self.seg is not None:
            x = x + self.seg.weight[0]
        x = self.encoder(self.drop(self.norm(x)))
        return self.head(self.drop(self.pool_act(self.pool(x[:, 0]))))


def build_model(name: str, num_classes: int | None = None, image_size: int = 224) -> nn.Module:
    if name in CV_MODELS:
        import torchvision  # imported only for CV cells: it costs seconds per cell process

        kw = {"weights": None, "num_classes": num_classes or 1000}
        if name == "vit_b_16":
            kw["image_size"] = image_size
        return getattr(torchvision.models, name)(**kw)
    if name in NLP_MODELS:
        return EncoderClassifier(NLP_MODELS[name], num_classes=num_classes or 2, pooler=name == "bert_base")
    raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")


def is_nlp(name: str) -> bool:
    return name in NLP_MODELS


@dataclass
class Workload:
    step: Callable[[], object]
    model: nn.Module
    inputs: torch.Tensor
    last_loss: Callable[[], float | None]
    params: int
    step_n: Callable[[int], object] | None = None   # inference on the first n samples (open-loop server)
    copy_bytes: int = 0                              # bytes copied host -> device per full step
    input_mode: str = "device"


def make_workload(model: str, batch: int, mode: str, device: torch.device, *, seq_len: int = 64,
                  image_size: int = 224, num_classes: int | None = None, amp: bool = False,
                  channels_last: bool = False, optimizer: str | None = None, lr: float | None = None,
                  seed: int = 0, input_mode: str = "device", max_samples: int | None = None) -> Workload:
    """A ``step()`` closure for one iteration of ``mode`` ("train" or "inference") on a fixed
    synthetic batch (``input_mode`` says whether each step copies it from host memory first).
    ``max_samples`` (>= batch) sizes the input for an open-loop server's largest batch."""
    if mode not in ("train", "inference"):
        raise ValueError(f"mode must be 'train' or 'inference', got {mode!r}")
    if input_mode not in ("device", "pinned", "pageable"):
        raise ValueError(f"input must be device, pinned or pageable, got {input_mode!r}")
    if batch < 1:
        raise ValueError(f"batch size must be >= 1, got {batch}")
    cap = max(batch, max_samples or batch)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = build_model(model, num_classes, image_size).to(device)
    n_cls = net.head.out_features if is_nlp(model) else (num_classes or 1000)
    if is_nlp(model):
        x_host = torch.randint(0, 30522, (cap, seq_len), generator=g)
    else:
        x_host = torch.randn(cap, 3, image_size, image_size, generator=g)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
            x_host = x_host.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, n_cls, (batch,), generator=g).to(device)
    params = sum(p.numel() for p in net.parameters())
    state: dict = {"loss": None}
    if input_mode == "device":
        x = x_host.to(device)

        def fetch(n):
            return x[:n]
    else:
        if input_mode == "pinned" and device.type == "cuda":
            x_host = x_host.pin_memory()
        x = torch.empty_like(x_host, device=device)

        def fetch(n):  # the copy is part of the timed step
            x[:n].copy_(x_host[:n], non_blocking=input_mode == "pinned")
            return x[:n]
    nbytes = x_host[:batch].numel() * x_host.element_size() if input_mode != "device" else 0

    if mode == "inference":
        # DEVIATION: the original timed inference in train mode with autograd on; eval() +
        # inference_mode() here (BatchNorm uses running stats, no graph is built)
        net.eval()

        def step_n(n):
            xb = fetch(n)
            with torch.inference_mode(), autocast(device, amp):
                return net(xb)
        return Workload(lambda: step_n(batch), net, x, lambda: None, params, step_n, nbytes, input_mode)

    net.train()
    opt_name = optimizer or ("adamw" if is_nlp(model) else "sgd")
    if opt_name == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=lr or 0.01, momentum=0.9, weight_decay=1e-4)
    elif opt_name == "adamw":
        opt = torch.optim.AdamW(net.parameters(), lr=lr or 1e-4, weight_decay=0.01)
    else:
        raise ValueError(f"optimizer must be sgd or adamw, got {opt_name!r}")
    scaler = make_grad_scaler(device, amp)

    def step():
        xb = fetch(batch)
        opt.zero_grad(set_to_none=True)
        with autocast(device, amp):
            loss = F.cross_entropy(net(xb), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        state["loss"] = loss.detach()
        return loss

    def last_loss():
        return None if state["loss"] is None else float(state["loss"])

    return Workload(step, net, x, last_loss, params, None, nbytes, input_mode)
