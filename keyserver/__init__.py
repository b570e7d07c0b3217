"""The QKD network: QKD modules on every link (simulated decoy-state BB84), a KMS node per site
relaying keys across trusted nodes, ETSI GS QKD 014 to the applications."""
