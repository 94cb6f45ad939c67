"""PyTorch -> ONNX (:mod:`.export`, the shift as slicing) -> Relax (:mod:`.relax`, with the shift check)."""
