"""Export a MobileNetV2-shaped network (torch, random weights, no torchvision) with a dynamic
batch dim into a Triton-layout repository for the serving benchmarks:

    python benchmarks/serve_make_mobilenet.py /work/cache/serve_repo [SIZE]

writes REPO/mobilenet_v2/1/model.onnx (input float32[batch, 3, 224, 224], 1000 classes), or
with SIZE other than 224 REPO/mobilenet_v2_SIZE/1/model.onnx at that input resolution.
The layer plan is MobileNetV2's (inverted residuals, expansion 6, ReLU6, width 1.0); the
weights are seeded random, which is enough for serving figures (same FLOPs, same shapes).
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


class MobileNetV2Like(nn.Module):
    def __init__(self, classes: int = 1000):
        super().__init__()
        layers = [conv_bn(3, 32, 3, 2)]
        cin = 32
        for expansion, cout, repeats, stride in PLAN:
            for i in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expansion))
                cin = cout
        layers.append(conv_bn(cin, 1280, 1, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(1280, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


def main(repo: str, size: int = 224) -> Path:
    torch.manual_seed(0)
    model = MobileNetV2Like().eval()
    name = "mobilenet_v2" if size == 224 else f"mobilenet_v2_{size}"
    out = Path(repo) / name / "1" / "model.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, (torch.randn(1, 3, size, size),), str(out), input_names=["input"],
                      output_names=["logits"], opset_version=17, dynamo=False,
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/work/cache/serve_repo",
         int(sys.argv[2]) if len(sys.argv) > 2 else 224)
