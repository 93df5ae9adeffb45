"""absl binaries: flags -> ExperimentConfig -> a library call."""

import os

# Before TensorFlow is imported. TF 2.14's wheel registers its cuDNN, cuFFT
# and cuBLAS factories twice and logs "Unable to register ... factory" at
# ERROR level on every start, even on a CPU: 3 keeps only FATAL. It also hides
# TF's other C++ ERROR lines, here and in the TFF worker (which inherits the
# environment), e.g. "failed call to cuInit" on a GPU machine; errors that stop
# a run still arrive as Python exceptions. TF_CPP_MIN_LOG_LEVEL=0 shows all.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
