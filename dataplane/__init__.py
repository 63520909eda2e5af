"""A DPDK packet dataplane driven from Python.

Layers, imported in one direction: the C shim (native/) -> the private cffi
module ``dataplane._native`` -> thin bindings (``dataplane.native``) -> the
classes users see (``Dataplane``, ``Port``, ``Worker``).
"""
__version__ = "0.1.0"
