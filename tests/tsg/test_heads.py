"""The shared boundary head (ECRL's and SSRN's): exact logits on hand-set weights, padding, and the
parameter names and count that the projects' checkpoints were written with."""

import torch

from common.tsg.heads import BoundaryHead


def test_boundary_head_exact_logits_residual_and_padding():
    torch.manual_seed(0)
    head = BoundaryHead(2, dropout=0.0).eval()
    with torch.no_grad():
        head.conv[0].weight.zero_()
        head.conv[0].bias.zero_()                      # conv -> GELU(0) = 0: only the residual path is left
        head.out.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        head.out.bias.copy_(torch.tensor([0.0, 0.0, -1.0]))
    h = torch.tensor([[[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]]])
    mask = torch.tensor([[True, True, False]])
    out = head(h, mask)
    neg = torch.finfo(torch.float32).min / 4
    assert out["start"].tolist() == [[1.0, 3.0, neg]]
    assert out["end"].tolist() == [[2.0, -1.0, neg]]
    assert out["inside"].tolist() == [[2.0, 1.0, 0.0]]            # padding's inside is left to the losses
    assert all(v.dtype == torch.float32 for v in out.values())
    with torch.no_grad():
        head.conv[0].bias.fill_(1.0)                   # conv path on: GELU(1) = 0.8413 added to every state
    g = 0.5 * (1.0 + torch.erf(torch.tensor(1.0) / 2**0.5)).item()
    assert torch.allclose(head(h, mask)["start"][0, :2], torch.tensor([1.0 + g, 3.0 + g]))


def test_boundary_head_parameters_keep_the_checkpoint_names_and_count():
    head = BoundaryHead(8, dropout=0.1)
    assert list(head.state_dict()) == ["conv.0.weight", "conv.0.bias", "out.weight", "out.bias"]
    assert sum(p.numel() for p in head.parameters()) == 8 * 8 * 3 + 8 + 8 * 3 + 3
