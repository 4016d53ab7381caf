"""The training proxy against the proxy contract; its own tests are in test_proxies.py."""

from proxynas.proxies import TrainProxy
from proxynas.testing.proxies import ProxyContract, separable_data


class TestTrainContract(ProxyContract):
    # learnable data, so a connected cell beats the disconnected one (which stays at chance)
    proxy = TrainProxy(epochs=3, batch_size=8, lr=0.1)
    splits = separable_data()


class TestFusedTrainContract(ProxyContract):
    # three archs trained as one fused network; accuracies on 48 images may move by one image
    proxy = TrainProxy(epochs=3, batch_size=8, lr=0.1, arch_batch=3, scores=("val_acc", "sotl_2"))
    splits = separable_data()
    batch_tolerance = 100 / 48 + 1e-9


class TestSideBySideTrainContract(ProxyContract):
    # three archs side by side: on a CPU each trains as it does alone, whatever their batch
    proxy = TrainProxy(epochs=3, batch_size=8, lr=0.1, arch_batch=3, batching="side_by_side",
                       scores=("val_acc", "sotl_2"))
    splits = separable_data()
