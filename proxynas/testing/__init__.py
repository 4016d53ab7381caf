"""Contract test suites for plug-ins, shipped with the package (as ``optuna.testing``).

A new distiller, proxy, search space or dataset is tested by one subclass of
the matching suite that names one fast instance, e.g.::

    from proxynas.testing.distillers import DistillerContract

    class TestMyMethod(DistillerContract):
        distiller = MyMethod(iterations=3)

pytest collects the inherited tests; nothing else needs registering.
"""
