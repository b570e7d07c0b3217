"""qphone: quantum-safe voice calls."""
