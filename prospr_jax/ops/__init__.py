"""Numerics kernels the models use (a convolution with a CPU-friendly weight gradient)."""
