"""Qt-free core of napari-dicom: every formula lives here.

Never import napari, Qt or magicgui from this package (a test enforces it).
Data flows one way: files -> scan -> series -> (napari layer | export).
"""
