"""ETSI GS QKD 014 key manager pair on a simulated decoy-state BB84 link."""
