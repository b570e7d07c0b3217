"""Sans-I/O security core of qphone."""
