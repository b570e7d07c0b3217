"""A call endpoint: lifecycle, handshake driver, send and receive paths, key supply, summary."""
