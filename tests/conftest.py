import os

import torch

# Test problems are small: one intra-op thread is as fast and keeps parallel test runs
# from oversubscribing a 2-core machine. IMPLICIT_TEST_THREADS overrides.
torch.set_num_threads(int(os.environ.get("IMPLICIT_TEST_THREADS", "1")))
