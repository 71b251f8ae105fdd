"""kiln's graph passes: one module per family or rule. Every pass is an onnx_ir pass."""
