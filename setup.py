"""Packaging for qmoe-tfq: quantum mixture-of-experts layers for TensorFlow Quantum."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def _requirements() -> list[str]:
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setup(
    name="qmoe-tfq",
    version="0.1.0",
    description="Quantum mixture-of-experts (QMoE) Keras layers on Cirq and TensorFlow Quantum",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["qmoe_tfq", "qmoe_tfq.*"]),
    python_requires=">=3.11,<3.13",
    install_requires=_requirements(),
    entry_points={"console_scripts": ["qmoe-tfq=qmoe_tfq.cli:main"]},
)
