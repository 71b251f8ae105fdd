import pytest

import kiln
from kiln.backends import registry


def test_all_four_backends_are_registered():
    assert registry.backend_names() == ["onnxruntime", "openvino", "native", "tensorrt"]


@pytest.mark.parametrize("name", ["onnxruntime", "openvino", "native", "tensorrt"])
def test_availability_never_raises_and_explains(name):
    status = registry.availability(name)
    assert isinstance(status.ok, bool)
    assert status.reason


def test_cpu_backends_are_available_here():
    assert {"onnxruntime", "openvino", "native"} <= set(registry.available_backends())


def test_tensorrt_reports_why_it_cannot_run_without_a_gpu():
    from kiln.compiler.target import detect_cuda_sm

    if detect_cuda_sm() is not None:
        pytest.skip("a CUDA device is present")
    status = registry.availability("tensorrt")
    assert not status.ok
    assert "tensorrt" in status.reason or "CUDA" in status.reason


def test_unknown_backend_is_a_kiln_error():
    with pytest.raises(kiln.KilnError, match="known backends"):
        registry.get_backend("nope")


def test_auto_prefers_openvino_on_cpu():
    from kiln.compiler.target import Target

    name, why = registry.choose_auto(Target.parse("cpu"))
    assert name == "openvino" and "auto" in why


def test_a_disabled_backend_is_unavailable_and_says_why(monkeypatch):
    from kiln.compiler.target import Target

    monkeypatch.setenv("KILN_DISABLE_BACKENDS", "openvino, tensorrt")
    status = registry.availability("openvino")
    assert not status.ok and "KILN_DISABLE_BACKENDS" in status.reason
    assert "openvino" not in registry.available_backends()
    assert registry.choose_auto(Target.parse("cpu"))[0] == "onnxruntime"
    with pytest.raises(kiln.KilnError, match="KILN_DISABLE_BACKENDS"):
        registry.require("openvino")


def test_each_backend_reads_only_the_options_it_declares():
    import re
    from pathlib import Path

    import kiln.backends as package

    root = Path(package.__file__).parent
    files = {"onnxruntime": ["onnxruntime.py"], "openvino": ["openvino.py"],
             "native": ["native/backend.py"], "tensorrt": ["tensorrt.py"]}
    for name, paths in files.items():
        text = "".join((root / p).read_text() for p in paths)
        read = set(re.findall(r"extra\.get\(\"(\w+)\"", text))
        assert read <= registry.BACKEND_OPTIONS[name], (name, read - registry.BACKEND_OPTIONS[name])


def test_a_misspelt_option_is_an_error_naming_it(conv_model):
    with pytest.raises(kiln.KilnError, match="unknown option.*'fallbak'"):
        kiln.Session(conv_model, backend="native", fallbak=None)
    kiln.Session(conv_model, backend="onnxruntime", performance_hint="LATENCY")  # another's
