"""quant.train: pretraining, quantization-aware training with distillation, and conversion.

config (frozen TrainConfig / QATConfig / DistillConfig) -> data (webdataset pairs) -> losses ->
distill (the frozen teacher) -> loop (the one training loop, DDP, checkpoints) -> convert (packed
file). embedded trains and caches the embedded teacher ``ternbench-tiny:mini`` and its QAT+KD
students; variants registers them with bench.models; cli is ``ternbench train``.
"""
