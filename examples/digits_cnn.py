"""Train a small CNN on scikit-learn's 8x8 digits with fastconv only (no PyTorch).

    python examples/digits_cnn.py --epochs 15 --plot digits.png

The model, training loop and plotting live in fastconv.demo so that
``fastconv demo`` runs the same code from an installed package.
"""

import sys

from fastconv.demo import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
