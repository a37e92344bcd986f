"""Pure maths of the training objectives; every formula is in its docstring."""
