"""The pt2 reader: one run of the saved program, every module with a tensor mapped, the rest listed."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from parity.formats.pt2.intermediates import intermediates


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(6, 8), nn.ReLU())
        self.skip = nn.Identity()  # no op at all in the program
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.skip(self.stem(x)))


def test_modules_map_in_order_and_modules_without_ops_are_listed(tmp_path):
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(4, 6)
    path = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(model, (x,)), str(path))
    known = {name for name, _ in model.named_modules() if name}
    got = intermediates(path, {"x": x.numpy()}, "cpu", known)
    # stem's output is stem.1's tensor (triage keeps one row per tensor)
    assert [(i.module, i.tensor) for i in got.mapped][:3] == [("stem.0", got.mapped[0].tensor),
                                                              ("stem.1", got.mapped[1].tensor),
                                                              ("stem", got.mapped[1].tensor)]
    assert [i.module for i in got.mapped] == ["stem.0", "stem.1", "stem", "head"]
    assert got.unmapped == ["skip"]
    with torch.no_grad():
        np.testing.assert_allclose(got.mapped[-1].value, model(x).numpy(), rtol=0, atol=0)
