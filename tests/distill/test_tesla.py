"""TESLA (Cui et al., ICML 2023) against the distiller contract; its own tests are in test_trajectory_matching.py."""

from proxynas.distill import TESLA
from proxynas.testing.distillers import PreparedDistillerContract

# one tiny expert of 2 epochs; 4 unrolled student steps per iteration (as test_mtt.py)
EXPERTS = {"num_experts": 1, "expert_train_epochs": 2, "expert_batch": 30, "expert_lr": 0.05, "width": 16, "depth": 2}
FAST = {**EXPERTS, "iterations": 12, "syn_steps": 4, "expert_epochs": 1, "max_start_epoch": 1}


class TestTESLAContract(PreparedDistillerContract):
    distiller = TESLA(**FAST)
    learns_step_size = True  # alpha, learned with lr_lr > 0
