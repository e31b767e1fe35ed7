"""Multiplication, for the demo."""


def mul(a, b):
    return a + b  # the example agent's deliberate first-try mistake
