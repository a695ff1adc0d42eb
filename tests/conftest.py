import os
import sys

# Make `tests/waiting.py` importable as `waiting` from any test folder.
sys.path.insert(0, os.path.dirname(__file__))
