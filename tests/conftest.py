import os
import sys

import torch

# tests import the top-level files (model.py, sample.py, ...) the way a reader runs them
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
torch.set_num_threads(2)
