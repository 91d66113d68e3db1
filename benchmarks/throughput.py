"""Throughput benchmark: QMoE vs a naive composition of tfq.layers.PQC experts (see qmoe_tfq.benchmark).

    python benchmarks/throughput.py [--quick]     # writes benchmarks/results.md and scaling.png
"""
import sys
from pathlib import Path

from qmoe_tfq import benchmark

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--out" not in argv:
        argv += ["--out", str(Path(__file__).parent)]
    benchmark.main(argv)
