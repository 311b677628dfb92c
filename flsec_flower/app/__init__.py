"""The assembly layer: the only code that knows concrete rules and attacks.

It finds them by name through :mod:`flsec_flower.app.registry` and wires them
into Flower (server and client apps, the simulation runner, sweeps, the
baselines runner, the CLI and the demo). The core (``flsec_flower`` outside
this package) imports neither ``strategies`` nor ``clients``, and neither of
those imports this package.
"""
