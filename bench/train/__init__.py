"""Training wired to the bench: the ``ternbench train`` commands, the model loader that knows the
bench's model specs, the embedded teacher and students with their recipes, and their variants."""
