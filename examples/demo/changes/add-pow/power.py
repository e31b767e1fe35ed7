"""Powers built on mul, for the demo."""

from mul import mul


def pow_(a, b):
    result = 1
    for _ in range(b):
        result = mul(result, a)
    return result
