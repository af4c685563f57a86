"""CUDA kernels (placeholder registered below; filled in by the int8 tensor-core path)."""
