import unittest

from power import pow_


class PowTest(unittest.TestCase):
    def test_pow(self):
        self.assertEqual(pow_(2, 10), 1024)
        self.assertEqual(pow_(7, 0), 1)
