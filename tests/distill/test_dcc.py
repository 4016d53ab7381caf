"""DCC and DSAC (Lee et al., ICML 2022) against the distiller contract; their own tests are in test_gradient_matching.py."""

from proxynas.distill import DCC
from proxynas.distill.dcc import DSAC
from proxynas.testing.distillers import DistillerContract

# no warm-up, so the contract sees DCC's own loss (the warm-up is tested in test_gradient_matching.py)
FAST = {"iterations": 12, "match_steps": 1, "net_epochs": 1, "batch_real": 10, "width": 16, "depth": 2, "outer_warmup": 0}


class TestDCCContract(DistillerContract):
    distiller = DCC(**FAST)


class TestDSACContract(DistillerContract):
    distiller = DSAC(**FAST)
