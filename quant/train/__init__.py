"""quant.train: pretraining, quantization-aware training with distillation, and conversion.

config (frozen TrainConfig / QATConfig / DistillConfig) -> data (webdataset pairs) -> losses ->
distill (the frozen teacher) -> loop (the one training loop, DDP, checkpoints) -> convert (packed
file). It trains models the caller built (models.LoadedClip) and parses no model spec: ``ternbench
train`` (bench.train) builds the student and the teacher from its specs.
"""
