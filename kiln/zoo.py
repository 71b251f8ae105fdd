"""The real model-zoo graphs the onnx package ships (``onnx/backend/test/data/light``), used as
kiln's bundled default model and by tests and benchmarks. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

from kiln.errors import ModelError

LIGHT_MODELS = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
                "shufflenet", "squeezenet", "vgg19", "zfnet512")

#: The model ``kiln bench`` and ``kiln run`` use when given none.
DEFAULT_MODEL = "resnet50"


def light_dir() -> Path:
    import onnx

    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def light_model(name: str = DEFAULT_MODEL) -> Path:
    """Path of the onnx package's light ``name`` model (e.g. "resnet50")."""
    short = name.removeprefix("light_").removesuffix(".onnx")
    if short not in LIGHT_MODELS:
        raise ModelError(f"no light model '{name}'; choose one of {', '.join(LIGHT_MODELS)}")
    path = light_dir() / f"light_{short}.onnx"
    if not path.is_file():
        raise ModelError(f"{path} is missing from the installed onnx package")
    return path
