import pytest

import kiln
from kiln.compiler.target import Target


@pytest.mark.parametrize("text", ["cpu", "cpu:avx2,fma", "cpu:avx2,fma,avx512f,avx512_vnni",
                                  "cpu:aarch64,neon,dotprod", "cpu:aarch64,neon,dotprod,i8mm",
                                  "gpu", "gpu:sm90", "gpu:sm80"])
def test_string_form_round_trips(text):
    assert str(Target.parse(text)) == text


def test_features_print_in_canonical_order():
    assert str(Target.parse("cpu:fma,avx2")) == "cpu:avx2,fma"


def test_detect_reads_this_machine():
    target = Target.detect()
    assert target.kind == "cpu"
    assert target.cores and target.cores >= 1
    assert Target.parse(str(target)).features == target.features


@pytest.mark.parametrize("text", ["tpu", "cpu:sse9", "gpu:ampere",
                                  "cpu:neon,dotprod",          # aarch64 features need the arch
                                  "cpu:aarch64,neon,avx2"])    # and never mix with x86 ones
def test_bad_strings_are_kiln_errors(text):
    with pytest.raises(kiln.KilnError):
        Target.parse(text)


def test_derived_properties():
    assert Target.parse("cpu:avx512f,avx512_bf16").prefers_bf16
    assert Target.parse("cpu:avx2,fma").simd_width_f32 == 8
    assert not Target.parse("cpu:avx2,fma").has_vnni


def test_aarch64_targets():
    arm = Target.parse("cpu:dotprod,neon,aarch64")
    assert str(arm) == "cpu:aarch64,neon,dotprod"
    assert arm.arch == "aarch64" and arm.simd_width_f32 == 4 and not arm.has_vnni
    assert Target.parse("cpu:avx2,fma").arch == "x86_64"
