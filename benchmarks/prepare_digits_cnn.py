"""Train a small CNN on scikit-learn's bundled 8x8 digits and export it to ONNX.

The digits set ships inside scikit-learn (no download). Training (15 epochs) takes seconds on an
idle CPU. The model and the held-out split land in a cache folder (``~/.cache/kiln/models`` by
default), never in git:

    python benchmarks/prepare_digits_cnn.py [--out DIR] [--epochs 15]

``upsample`` resizes the 8x8 images (bilinear) so a larger input can be timed with the same
trained weights (the network ends in a global average pool, so any size works).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

CACHE = Path(os.environ.get("KILN_CACHE", Path.home() / ".cache" / "kiln")) / "models"


def digits_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test); images are float32 [N, 1, 8, 8] scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
    return x_tr, y_tr, x_te, y_te


def build_net():  # -> torch.nn.Module
    import torch.nn as nn

    def block(cin: int, cout: int) -> list:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(1, 32), *block(32, 32), nn.MaxPool2d(2),
        *block(32, 64), *block(64, 64),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )


def train(epochs: int = 15, seed: int = 0):  # -> (net, x_test, y_test)
    import torch

    torch.manual_seed(seed)
    x_tr, y_tr, x_te, y_te = digits_split(seed)
    net = build_net()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    net.eval()
    return net, x_te, y_te


def upsample(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of [N, 1, 8, 8] images to [N, 1, size, size]."""
    if size == x.shape[-1]:
        return x
    import torch

    t = torch.nn.functional.interpolate(torch.from_numpy(x), size=(size, size),
                                        mode="bilinear", align_corners=False)
    return t.numpy().astype(np.float32)


def export(out: Path = CACHE, epochs: int = 15, sizes: tuple[int, ...] = (8,)) -> Path:
    """Train, then write ``digits_cnn.onnx`` (dynamic batch and spatial size) and
    ``digits_test.npz`` (held-out x, y at 8x8) into ``out``; returns the model path."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    net, x_te, y_te = train(epochs)
    path = out / "digits_cnn.onnx"
    torch.onnx.export(net, (torch.from_numpy(x_te[:1]),), str(path), input_names=["image"],
                      output_names=["logits"], opset_version=17, dynamo=False,
                      dynamic_axes={"image": {0: "batch", 2: "h", 3: "w"},
                                    "logits": {0: "batch"}})
    np.savez(out / "digits_test.npz", x=x_te, y=y_te)
    with torch.no_grad():
        for size in sizes:
            acc = (net(torch.from_numpy(upsample(x_te, size))).argmax(1).numpy() == y_te).mean()
            print(f"digits CNN fp32 held-out top-1 at {size}x{size}: {acc * 100:.2f}%")
    print(f"wrote {path}")
    return path


def finetune(model, epochs: int = 8, seed: int = 0):  # (onnx_ir.Model) -> onnx_ir.Model
    """Fine-tune a (pruned) digits CNN on the training split and return it as ONNX IR.

    The graph must be the plain chain the exporter writes (Conv, Relu, MaxPool,
    GlobalAveragePool, Flatten, Gemm with transB=1); weights are copied in, trained, copied
    back into the same initializers.
    """
    import onnx_ir as ir
    import torch
    import torch.nn as nn

    torch.manual_seed(seed)
    layers, params = [], []
    for node in model.graph:
        op = node.op_type
        if op == "Conv":
            w = node.inputs[1].const_value.numpy()
            pads = node.attributes["pads"].as_ints() if "pads" in node.attributes else [0] * 4
            conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2:], padding=tuple(pads[:2]))
            conv.weight.data = torch.from_numpy(w.copy())
            conv.bias.data = torch.from_numpy(node.inputs[2].const_value.numpy().copy())
            layers.append(conv)
            params.append((node, conv))
        elif op == "Relu":
            layers.append(nn.ReLU())
        elif op == "MaxPool":
            layers.append(nn.MaxPool2d(tuple(node.attributes["kernel_shape"].as_ints())))
        elif op == "GlobalAveragePool":
            layers.append(nn.AdaptiveAvgPool2d(1))
        elif op == "Flatten":
            layers.append(nn.Flatten())
        elif op == "Gemm":
            w = node.inputs[1].const_value.numpy()
            fc = nn.Linear(w.shape[1], w.shape[0])
            fc.weight.data = torch.from_numpy(w.copy())
            fc.bias.data = torch.from_numpy(node.inputs[2].const_value.numpy().copy())
            layers.append(fc)
            params.append((node, fc))
        else:
            raise ValueError(f"finetune handles the exported chain only, not {op}")
    net = nn.Sequential(*layers)
    x_tr, y_tr, _, _ = digits_split(seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
            opt.step()
    for node, module in params:
        for index, tensor in ((1, module.weight), (2, module.bias)):
            value = node.inputs[index]
            value.const_value = ir.tensor(tensor.detach().numpy().copy(), name=value.name)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=CACHE)
    ap.add_argument("--epochs", type=int, default=15)
    args = ap.parse_args()
    export(args.out, args.epochs)


if __name__ == "__main__":
    main()
