"""samspt.export: LoRA merge, ONNX graphs, TensorRT engines. May import training and runtime."""
