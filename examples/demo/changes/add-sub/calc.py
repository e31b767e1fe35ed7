"""A tiny calculator: the sample project the demo's tasks change."""


def add(a, b):
    return a + b


def sub(a, b):
    return a - b
