"""MTT (Cazenavette et al., CVPR 2022) against the distiller contract.

Its own tests are in test_trajectory_matching.py (shared with TESLA).
"""

from proxynas.distill import MTT
from proxynas.testing.distillers import PreparedDistillerContract

# one tiny expert of 2 epochs; 4 unrolled student steps per iteration. The step sizes are pinned:
# the defaults are CIFAR-10's (lr_img 100 a ZCA-space step, 100 experts).
EXPERTS = {"num_experts": 1, "expert_train_epochs": 2, "expert_batch": 30, "expert_lr": 0.05, "width": 16, "depth": 2}
FAST = {**EXPERTS, "iterations": 12, "syn_steps": 4, "expert_epochs": 1, "max_start_epoch": 1,
        "lr_img": 1000.0, "lr_teacher": 0.01}


class TestMTTContract(PreparedDistillerContract):
    distiller = MTT(**FAST)
    learns_step_size = True  # alpha, learned with lr_lr > 0
