"""``python -m napari_dicom``: the ``napari-dicom`` command line."""

from .cli import run

if __name__ == "__main__":
    run()
