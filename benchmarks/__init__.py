"""absl binaries: flags -> ExperimentConfig -> a library call."""

import os

# Before TensorFlow is imported: keep its C++ start-up chatter (no CUDA, no
# TensorRT on a CPU machine) out of the progress output.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
