"""Training wired to the bench: the ``ternbench train`` commands, the models built from the bench's
model specs for quant.train to train and pack, the embedded teacher and students with their recipes,
and their variants."""
