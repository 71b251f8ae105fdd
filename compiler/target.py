"""What the hardware is: a frozen value the passes read instead of importing a backend.

String form, parsed and printed back: ``cpu``, ``cpu:avx2,fma``, ``cpu:avx512f,avx512_vnni``,
``cpu:aarch64,neon,dotprod``, ``gpu:sm90``. ``Target.detect()`` reads this machine; ``"auto"``
means detect. A CPU target is x86-64 unless it names ``aarch64``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

from kiln.errors import KilnError

#: x86-64 CPU features kiln's passes and kernels care about, in the order they print.
X86_FEATURES = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                "avx512_bf16", "amx")
#: aarch64: the architecture itself, then NEON (ASIMD), sdot/udot (armv8.2-a dotprod) and
#: usdot/smmla (i8mm).
ARM_FEATURES = ("aarch64", "neon", "dotprod", "i8mm")
#: Every CPU feature name, in the order they print.
CPU_FEATURES = ARM_FEATURES + X86_FEATURES

# /proc/cpuinfo flag -> kiln feature name
_CPUINFO_FLAGS = {
    "avx2": "avx2", "fma": "fma", "f16c": "f16c", "avx512f": "avx512f", "avx512bw": "avx512bw",
    "avx512vl": "avx512vl", "avx512_vnni": "avx512_vnni", "avx512_bf16": "avx512_bf16",
    "amx_tile": "amx",
}
# /proc/cpuinfo "Features" entry on aarch64 -> kiln feature name
_CPUINFO_ARM_FEATURES = {"asimd": "neon", "asimddp": "dotprod", "i8mm": "i8mm"}


@dataclasses.dataclass(frozen=True)
class Target:
    """The hardware a model is compiled for.

    kind:     "cpu" or "gpu".
    features: CPU ISA features (names from CPU_FEATURES).
    cores:    usable cores (None when unknown, e.g. a parsed cross-compile target).
    l1d_bytes, l2_bytes, l3_bytes: per-core L1d/L2 and shared L3 sizes (None when unknown).
    gpu_sm:   CUDA compute capability as an int (90 for sm_90), None for CPU targets.
    """

    kind: str = "cpu"
    features: frozenset[str] = frozenset()
    cores: int | None = None
    l1d_bytes: int | None = None
    l2_bytes: int | None = None
    l3_bytes: int | None = None
    gpu_sm: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("cpu", "gpu"):
            raise KilnError(f"target kind must be 'cpu' or 'gpu', not '{self.kind}'")
        unknown = set(self.features) - set(CPU_FEATURES)
        if unknown:
            raise KilnError(f"unknown CPU feature(s) {sorted(unknown)}; known: "
                            f"{', '.join(CPU_FEATURES)}")
        arm = set(self.features) & set(ARM_FEATURES)
        if arm and "aarch64" not in self.features:
            raise KilnError(f"CPU feature(s) {sorted(arm)} are aarch64 features: name the "
                            "architecture too, e.g. 'cpu:aarch64,neon,dotprod'")
        x86 = set(self.features) & set(X86_FEATURES)
        if arm and x86:
            raise KilnError(f"an aarch64 target cannot have x86 feature(s) {sorted(x86)}")

    def has(self, feature: str) -> bool:
        return feature in self.features

    @property
    def arch(self) -> str:
        """The CPU architecture: "aarch64" or "x86_64" (a GPU target's host is taken as x86_64)."""
        return "aarch64" if self.has("aarch64") else "x86_64"

    @property
    def simd_width_f32(self) -> int:
        """f32 lanes of the widest vector unit: 16 (AVX-512), 8 (AVX2), 4 (NEON) or 1."""
        if self.has("avx512f"):
            return 16
        if self.has("avx2"):
            return 8
        if self.has("neon"):
            return 4
        return 1

    @property
    def prefers_bf16(self) -> bool:
        return self.has("avx512_bf16") or self.has("amx")

    @property
    def has_vnni(self) -> bool:
        return self.has("avx512_vnni") or self.has("amx")

    def __str__(self) -> str:
        if self.kind == "gpu":
            return f"gpu:sm{self.gpu_sm}" if self.gpu_sm else "gpu"
        feats = [f for f in CPU_FEATURES if f in self.features]
        return "cpu:" + ",".join(feats) if feats else "cpu"

    def describe(self) -> dict[str, object]:
        return {"target": str(self), "kind": self.kind, "features": sorted(self.features),
                "cores": self.cores, "l1d_bytes": self.l1d_bytes, "l2_bytes": self.l2_bytes,
                "l3_bytes": self.l3_bytes, "gpu_sm": self.gpu_sm}

    @classmethod
    def parse(cls, text: str | Target) -> Target:
        """Parse ``cpu``, ``cpu:avx2,fma``, ``gpu``, ``gpu:sm90``; ``auto`` detects."""
        if isinstance(text, Target):
            return text
        spec = text.strip().lower()
        if spec in ("", "auto"):
            return cls.detect()
        kind, _, rest = spec.partition(":")
        if kind == "cpu":
            feats = frozenset(f.strip() for f in rest.split(",") if f.strip())
            return cls(kind="cpu", features=feats)
        if kind == "gpu":
            if not rest:
                return cls(kind="gpu")
            match = re.fullmatch(r"sm_?(\d{2,3})", rest)
            if not match:
                raise KilnError(f"cannot parse GPU target '{text}': expected e.g. 'gpu:sm90'")
            return cls(kind="gpu", gpu_sm=int(match.group(1)))
        raise KilnError(f"cannot parse target '{text}': expected 'cpu', 'cpu:avx2,fma', "
                        "'gpu:sm90' or 'auto'")

    @classmethod
    def detect(cls, device: str = "cpu") -> Target:
        """This machine's CPU (``device="cpu"``) or first CUDA GPU (``device="gpu"``)."""
        if device == "gpu":
            sm = detect_cuda_sm()
            if sm is None:
                raise KilnError("no CUDA GPU found on this machine (nvidia-smi reports none)")
            return cls(kind="gpu", gpu_sm=sm)
        return cls(kind="cpu", features=_detect_cpu_features(), cores=_detect_cores(),
                   l1d_bytes=_cache_size(1, "Data"), l2_bytes=_cache_size(2),
                   l3_bytes=_cache_size(3))


@functools.cache  # the CPU's flags and caches do not change while the process runs
def _detect_cpu_features() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return frozenset(name for flag, name in _CPUINFO_FLAGS.items() if flag in flags)
        if line.startswith("Features"):  # aarch64
            flags = set(line.split(":", 1)[1].split())
            found = {name for flag, name in _CPUINFO_ARM_FEATURES.items() if flag in flags}
            return frozenset(found | {"aarch64"})
    return frozenset()


def _detect_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@functools.cache
def _cache_size(level: int, kind: str | None = None) -> int | None:
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    if not base.is_dir():
        return None
    for index in sorted(base.glob("index*")):
        try:
            if int((index / "level").read_text()) != level:
                continue
            cache_type = (index / "type").read_text().strip()
            if kind is not None and cache_type != kind:
                continue
            if kind is None and cache_type == "Instruction":
                continue
            return _parse_size((index / "size").read_text().strip())
        except (OSError, ValueError):
            continue
    return None


def _parse_size(text: str) -> int:
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    if text[-1] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


def detect_cuda_sm() -> int | None:
    """Compute capability of the first CUDA GPU as an int (90 for sm_90), or None."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    line = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
    match = re.fullmatch(r"(\d+)\.(\d+)", line.strip())
    return int(match.group(1)) * 10 + int(match.group(2)) if match else None
