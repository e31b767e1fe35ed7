"""Multiplication, for the demo."""


def mul(a, b):
    return a * b
