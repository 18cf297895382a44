"""samspt.training: the SPT model (PyTorch), its checkpoints, data, losses, loop and evaluation."""
