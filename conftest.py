"""pytest: tests see the environment the binaries set up (benchmarks/__init__).

TensorFlow sets TF_CPP_MIN_LOG_LEVEL=1 on import when it is unset, and the
binaries a test starts inherit it; importing benchmarks first gives them the
binaries' own default, so their stderr is what a user sees.
"""

import benchmarks  # noqa: F401  (before TensorFlow is imported)
