"""Executors of circuits beyond TFQ's own ops: `statevector`, a TF kernel for small circuits."""
