import sys
from pathlib import Path

# Tests import the toolkit from the checkout and the helpers beside them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
