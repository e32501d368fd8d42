"""Regenerate the PyTorch-exported recurrent fixtures (tests/test_torch_recurrent_import.py reads them; the test
itself needs no torch). Run from the repository root: ``python tests/data/torch_recurrent/make_fixtures.py``.

Each model is ``nn.LSTM`` / ``nn.GRU`` (``batch_first=True``, one layer, 5 -> 7) and ``nn.Linear(7, 3)`` on the
last step, exported by ``torch.onnx.export(..., dynamo=False)`` (the TorchScript exporter, opset 17, dynamic
batch). Written with torch 2.13.0. The biases are randomised (PyTorch initialises them uniformly already;
this only makes sure GRU's ``b_hn``, which Flux's GRU has no field for, is clearly non-zero).
"""
from __future__ import annotations

from pathlib import Path

import torch

HERE = Path(__file__).parent


class LastStepClassifier(torch.nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.rnn = getattr(torch.nn, kind)(5, 7, batch_first=True)
        self.fc = torch.nn.Linear(7, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(x)
        return self.fc(y[:, -1, :])


def main() -> None:
    torch.manual_seed(0)
    for kind in ("LSTM", "GRU"):
        m = LastStepClassifier(kind).eval()
        with torch.no_grad():
            for b in (m.rnn.bias_ih_l0, m.rnn.bias_hh_l0):
                b.uniform_(-0.5, 0.5)
        torch.onnx.export(m, (torch.randn(2, 6, 5),), str(HERE / f"torch_{kind.lower()}.onnx"), dynamo=False,
                          input_names=["input"], output_names=["output"], dynamic_axes={"input": {0: "N"}},
                          opset_version=17)


if __name__ == "__main__":
    main()
