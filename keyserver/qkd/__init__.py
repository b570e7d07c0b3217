"""The QKD layer: decoy-state BB84 links as pairs of module processes (see docs/bb84.md).

A transmitter and a receiver module (:mod:`keyserver.qkd.module`) joined by the quantum channel
(:mod:`keyserver.qkd.quantumchannel`) and the Wegman-Carter authenticated classical channel
(:mod:`keyserver.qkd.classicalchannel`), running the sans-I/O post-processing protocol
(:mod:`keyserver.qkd.postprocessing`), each serving its key to its local KMS node over ETSI 014
(:mod:`keyserver.qkd.northbound`).
"""
