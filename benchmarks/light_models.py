"""The onnx package's nine "light" model-zoo models, loaded the way kiln's tests use them.

The light models build every weight with ConstantOfShape and a single fill value, so their
softmax outputs are uniform and compare equal almost whatever a compiler does. ``randomized``
replaces those fills with seeded random tensors (He-scaled) so numeric checks mean something.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

LIGHT_MODELS = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
                "shufflenet", "squeezenet", "vgg19", "zfnet512")


def light_model_path(name: str) -> Path:
    """Path of ``light_<name>.onnx`` inside the installed onnx package."""
    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{name}.onnx"


def randomized(proto: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """A copy whose ConstantOfShape-built weights are random initializers instead."""
    rng = np.random.default_rng(seed)
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    keep = []
    for node in graph.node:
        shape_name = node.input[0] if node.input else ""
        if node.op_type != "ConstantOfShape" or shape_name not in inits:
            keep.append(node)
            continue
        shape = tuple(int(d) for d in numpy_helper.to_array(inits[shape_name]))
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
        name = node.output[0]
        if len(shape) == 1 and ("var" in name or "riv" in name):  # BN variances: positive
            data = rng.uniform(0.5, 1.5, shape)
        elif len(shape) == 1:  # biases, BN scales and shifts
            data = rng.uniform(-0.1, 0.1, shape) + (1.0 if "scale" in name or "_s_" in name else 0)
        else:
            data = rng.standard_normal(shape) * math.sqrt(2.0 / max(fan_in, 1))
        graph.initializer.append(numpy_helper.from_array(data.astype(np.float32), name))
    del graph.node[:]
    graph.node.extend(keep)
    model.ir_version = max(model.ir_version, 4)
    return model


def logits(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy ending before its final Softmax, whose probabilities hide most differences."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    last = graph.node[-1]
    if last.op_type != "Softmax" or [o.name for o in graph.output] != [last.output[0]]:
        return model
    out = graph.output[0]
    out.name = last.input[0]
    del graph.node[len(graph.node) - 1]
    return model
