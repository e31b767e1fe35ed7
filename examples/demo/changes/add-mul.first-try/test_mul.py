import unittest

from mul import mul


class MulTest(unittest.TestCase):
    def test_mul(self):
        self.assertEqual(mul(4, 3), 12)
