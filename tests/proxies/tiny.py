"""Tiny synthetic data and NB201 archs shared by the proxy tests (they live in :mod:`proxynas.testing.proxies`)."""

from proxynas.testing.proxies import ALL_CONV, ALL_NONE, ARCH, SPACE, make_ctx, make_data, separable_data

__all__ = ["ALL_CONV", "ALL_NONE", "ARCH", "SPACE", "make_ctx", "make_data", "separable_data"]
