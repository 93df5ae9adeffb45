"""tff-localsgd: Local SGD on overparameterized ReLU networks, as TFF computations."""

import os

# TensorFlow's default CPU allocator takes every large buffer fresh from the
# OS (glibc mmaps allocations over 32 MB), so at m = 4096 each new 67 MB
# weight-sized tensor pays its page faults again. The BFC allocator reuses
# its buffers: rounds measured 1.3x (native) to 1.6x (inprocess) faster at
# m = 4096 (docs/binaries.md, the CPU allocator), with no more memory and the same bits. It must be chosen before TensorFlow
# allocates; the TFF worker inherits it. Set it to false to compare.
os.environ.setdefault('TF_CPU_ALLOCATOR_USE_BFC', 'true')
