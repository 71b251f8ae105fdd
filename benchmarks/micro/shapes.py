"""The shapes the kernel micro-benchmarks measure: ResNet-50 (batch 1, 224x224) conv layers,
their GEMM forms, and depthwise layers of MobileNet/ShuffleNet-style networks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConvShape:
    name: str
    n: int
    c: int
    h: int
    w: int
    k: int
    kh: int
    kw: int
    stride: int = 1
    pad: int = 0
    groups: int = 1

    @property
    def out_hw(self) -> tuple[int, int]:
        oh = (self.h + 2 * self.pad - self.kh) // self.stride + 1
        ow = (self.w + 2 * self.pad - self.kw) // self.stride + 1
        return oh, ow

    @property
    def flops(self) -> float:
        oh, ow = self.out_hw
        return 2.0 * self.n * self.k * oh * ow * (self.c // self.groups) * self.kh * self.kw

    @property
    def gemm(self) -> tuple[int, int, int]:
        """(M, N, K) of this conv as one GEMM per image and group."""
        oh, ow = self.out_hw
        return self.k // self.groups, oh * ow, (self.c // self.groups) * self.kh * self.kw


GEMM_SHAPES: list[tuple[str, int, int, int]] = [
    ("square 1024", 1024, 1024, 1024),
    ("square 2048", 2048, 2048, 2048),
    ("resnet fc (batch 1)", 1, 1000, 2048),
    ("resnet fc (batch 8)", 8, 1000, 2048),
    ("minilm qkv (128 tok)", 128, 384, 384),
    ("minilm ffn (128 tok)", 128, 1536, 384),
]

RESNET50_CONVS: list[ConvShape] = [
    ConvShape("conv1 7x7/2", 1, 3, 224, 224, 64, 7, 7, 2, 3),
    ConvShape("l1 1x1 64>64", 1, 64, 56, 56, 64, 1, 1),
    ConvShape("l1 3x3 64", 1, 64, 56, 56, 64, 3, 3, 1, 1),
    ConvShape("l1 1x1 64>256", 1, 64, 56, 56, 256, 1, 1),
    ConvShape("l1 1x1 256>64", 1, 256, 56, 56, 64, 1, 1),
    ConvShape("l2 1x1/2 256>128", 1, 256, 56, 56, 128, 1, 1, 2),
    ConvShape("l2 3x3 128", 1, 128, 28, 28, 128, 3, 3, 1, 1),
    ConvShape("l2 1x1 128>512", 1, 128, 28, 28, 512, 1, 1),
    ConvShape("l3 3x3 256", 1, 256, 14, 14, 256, 3, 3, 1, 1),
    ConvShape("l3 1x1 256>1024", 1, 256, 14, 14, 1024, 1, 1),
    ConvShape("l3 1x1 1024>256", 1, 1024, 14, 14, 256, 1, 1),
    ConvShape("l4 3x3 512", 1, 512, 7, 7, 512, 3, 3, 1, 1),
    ConvShape("l4 1x1 512>2048", 1, 512, 7, 7, 2048, 1, 1),
    ConvShape("l4 1x1 2048>512", 1, 2048, 7, 7, 512, 1, 1),
]

DEPTHWISE_CONVS: list[ConvShape] = [
    ConvShape("dw 3x3 32@112", 1, 32, 112, 112, 32, 3, 3, 1, 1, 32),
    ConvShape("dw 3x3/2 64@112", 1, 64, 112, 112, 64, 3, 3, 2, 1, 64),
    ConvShape("dw 3x3 128@56", 1, 128, 56, 56, 128, 3, 3, 1, 1, 128),
    ConvShape("dw 3x3 256@28", 1, 256, 28, 28, 256, 3, 3, 1, 1, 256),
    ConvShape("dw 3x3/2 240@28", 1, 240, 28, 28, 240, 3, 3, 2, 1, 240),
    ConvShape("dw 3x3 512@14", 1, 512, 14, 14, 512, 3, 3, 1, 1, 512),
]

# 3x3 stride-1 layers of the light models, where Winograd F(4,3) competes with im2col.
WINOGRAD_CANDIDATES: list[ConvShape] = [
    ConvShape("resnet l1 3x3 64@56", 1, 64, 56, 56, 64, 3, 3, 1, 1),
    ConvShape("resnet l2 3x3 128@28", 1, 128, 28, 28, 128, 3, 3, 1, 1),
    ConvShape("resnet l3 3x3 256@14", 1, 256, 14, 14, 256, 3, 3, 1, 1),
    ConvShape("resnet l4 3x3 512@7", 1, 512, 7, 7, 512, 3, 3, 1, 1),
    ConvShape("densenet 3x3 128>32@56", 1, 128, 56, 56, 32, 3, 3, 1, 1),
    ConvShape("densenet 3x3 128>32@14", 1, 128, 14, 14, 32, 3, 3, 1, 1),
    ConvShape("squeezenet 3x3 16>64@55", 1, 16, 55, 55, 64, 3, 3, 1, 1),
    ConvShape("squeezenet 3x3 64>256@13", 1, 64, 13, 13, 256, 3, 3, 1, 1),
    ConvShape("inception 3x3 96>128@28", 1, 96, 28, 28, 128, 3, 3, 1, 1),
]
