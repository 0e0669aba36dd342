"""napari-dicom: DICOM in napari with the correct picture by default."""

__version__ = "0.1.0"
