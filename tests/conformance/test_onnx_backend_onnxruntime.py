"""onnx's own BackendTest suite run through kiln.backend with backend="onnxruntime".

The default run covers a marked subset of common operators; ``-m slow`` runs every node,
simple, pytorch-converted and pytorch-operator case (the light model-zoo cases are covered by
tests/runtime/test_light_models.py instead, since they need their expected outputs' inputs).
"""

import os

import onnx.backend.test
import pytest

import kiln.backend

FAST_OPS = ("test_relu", "test_add", "test_conv_", "test_gemm", "test_matmul", "test_softmax",
            "test_maxpool", "test_averagepool", "test_concat", "test_reshape", "test_transpose",
            "test_gather_", "test_slice", "test_batchnorm", "test_sigmoid")

backend_test = onnx.backend.test.BackendTest(kiln.backend, __name__)
backend_test.exclude(r"(test_.*_cuda)$")  # kiln's CPU backends only
# Real model-zoo cases need network downloads; kiln never fetches at run time.
backend_test.exclude(r"^test_(bvlc_alexnet|densenet121|inception_v1|inception_v2|resnet50|"
                     r"shufflenet|squeezenet|vgg19|zfnet512)_")

_cases = backend_test.test_cases
for _name, _case in _cases.items():
    for _attr in dir(_case):
        if not _attr.startswith("test_"):
            continue
        _fn = getattr(_case, _attr)
        if not any(_attr.startswith(p) for p in FAST_OPS) and not os.environ.get("KILN_FULL"):
            setattr(_case, _attr, pytest.mark.slow(_fn))
globals().update(_cases)
