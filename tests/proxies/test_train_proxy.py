"""The training proxy against the proxy contract; its own tests are in test_proxies.py."""

from proxynas.proxies import TrainProxy
from proxynas.testing.proxies import ProxyContract, separable_data


class TestTrainContract(ProxyContract):
    # learnable data, so a connected cell beats the disconnected one (which stays at chance)
    proxy = TrainProxy(epochs=3, batch_size=8, lr=0.1)
    splits = separable_data()
