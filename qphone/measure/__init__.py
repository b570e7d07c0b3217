"""Measurement beside the product: loopback, latency, CPU, quality, aiortc baseline, bench."""
