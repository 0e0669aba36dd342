"""``python -m napari_dicom``: the ``napari-dicom`` command line."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
