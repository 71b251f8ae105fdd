"""Export a MobileNetV2-shaped network (torch, random weights, no torchvision) with a dynamic
batch dim into a Triton-layout repository for the serving benchmarks:

    python benchmarks/serve_make_mobilenet.py /work/cache/serve_repo [SIZE] [WIDTH]

writes REPO/mobilenet_v2/1/model.onnx (input float32[batch, 3, 224, 224], 1000 classes), or
with SIZE other than 224 REPO/mobilenet_v2_SIZE/1/model.onnx at that input resolution; a WIDTH
multiplier other than 1.0 names it like the published variants (0.35 at 96 px:
mobilenet_v2_035_96). The layer plan is MobileNetV2's (inverted residuals, expansion 6, ReLU6,
channels scaled by WIDTH and rounded to multiples of 8 as the reference does); the weights are
seeded random, which is enough for serving figures (same FLOPs, same shapes).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

# (expansion, out channels, repeats, first stride) -- MobileNetV2, width 1.0
PLAN = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
        (6, 160, 3, 2), (6, 320, 1, 1)]


def conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1,
            act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        layers = [] if expansion == 1 else [conv_bn(cin, hidden, 1, 1)]
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden),
                   conv_bn(hidden, cout, 1, 1, act=False)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


def scaled(channels: int, width: float) -> int:
    """Channels times the width multiplier, rounded to a multiple of 8, never below 90%."""
    rounded = max(8, int(channels * width + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * channels * width else rounded


class MobileNetV2Like(nn.Module):
    def __init__(self, classes: int = 1000, width: float = 1.0):
        super().__init__()
        cin = scaled(32, width)
        layers = [conv_bn(3, cin, 3, 2)]
        for expansion, channels, repeats, stride in PLAN:
            cout = scaled(channels, width)
            for i in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expansion))
                cin = cout
        layers.append(conv_bn(cin, 1280, 1, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(1280, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


def main(repo: str, size: int = 224, width: float = 1.0) -> Path:
    torch.manual_seed(0)
    model = MobileNetV2Like(width=width).eval()
    name = "mobilenet_v2"
    if width != 1.0:
        name += f"_{round(width * 100):03d}"
    if size != 224 or width != 1.0:
        name += f"_{size}"
    out = Path(repo) / name / "1" / "model.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, (torch.randn(1, 3, size, size),), str(out), input_names=["input"],
                      output_names=["logits"], opset_version=17, dynamo=False,
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/work/cache/serve_repo",
         int(sys.argv[2]) if len(sys.argv) > 2 else 224,
         float(sys.argv[3]) if len(sys.argv) > 3 else 1.0)
