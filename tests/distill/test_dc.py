"""DC / DSA (Zhao et al., ICLR 2021; Zhao & Bilen, ICML 2021) against the distiller contract.

The method's own tests are in test_gradient_matching.py (shared with DCC and IDC).
"""

from proxynas.distill import DC
from proxynas.testing.distillers import DistillerContract

# depth 2 keeps a 2x2 map on 8x8 images; one match step and one net epoch per network
FAST = {"iterations": 12, "match_steps": 1, "net_epochs": 1, "batch_real": 10, "width": 16, "depth": 2}


class TestDCContract(DistillerContract):
    distiller = DC(**FAST, dsa="none")
