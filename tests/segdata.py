"""Test objects written with the reference implementations: DICOM SEG by highdicom over a
CT series written in tmp_path, RTSTRUCT by pydicom, following PS3.3 A.51 / A.19."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from napari_dicom.core.phantom import write_ct_phantom

#: (label, CIELab L*, a*, b*) of the test segments: red-ish, green-ish, blue-ish, yellow
SEGMENTS = [("Liver", 53.0, 80.0, 67.0), ("Tumour", 88.0, -86.0, 83.0),
            ("Vessel", 32.0, 79.0, -108.0), ("Bone", 97.0, -22.0, 94.0)]


def write_ct(folder: Path, n: int = 8, size: int = 48, **kw: object) -> list[Path]:
    """A CT phantom series (positions along +z from z=0, 2.5 mm apart, 0.7 mm pixels)."""
    return write_ct_phantom(folder, n_slices=n, size=size, spacing=(2.5, 0.7, 0.7), **kw)


def _descriptions(n: int, lab: bool = True) -> list[hd.seg.SegmentDescription]:
    out = []
    for i in range(n):
        label, L, a, b = SEGMENTS[i % len(SEGMENTS)]
        out.append(hd.seg.SegmentDescription(
            segment_number=i + 1, segment_label=label,
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            display_color=hd.color.CIELabColor(L, a, b) if lab else None,
        ))
    return out


def write_seg(
    path: Path, ct_paths: Sequence[Path], pixel_array: npt.NDArray[np.generic],
    seg_type: str = "BINARY", n_segments: int | None = None, series_number: int = 50,
    description: str = "AI organs",
) -> Path:
    """A SEG over the CT files (source order as given). ``pixel_array``: (frames, rows,
    columns, segments) bool / float for BINARY / FRACTIONAL, (frames, rows, columns)
    label values for LABELMAP."""
    sources = [pydicom.dcmread(p) for p in ct_paths]
    if n_segments is None:
        n_segments = int(pixel_array.max()) if seg_type == "LABELMAP" else pixel_array.shape[-1]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixel_array, segmentation_type=seg_type,
        segment_descriptions=_descriptions(n_segments),
        series_instance_uid=hd.UID(), series_number=series_number,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="napari-dicom tests",
        manufacturer_model_name="tests", software_versions="1", device_serial_number="1",
        max_fractional_value=255, series_description=description,
    )
    seg.save_as(path)
    return path


def lab_to_dicom(L: float, a: float, b: float) -> list[int]:
    """PS3.3 C.10.7.1.1: L* 0..100 -> 0..65535, a*, b* -128..127 -> 0..65535."""
    return [round(L * 65535 / 100), round((a + 128) * 65535 / 255),
            round((b + 128) * 65535 / 255)]


def write_rtstruct(
    path: Path, ct_paths: Sequence[Path],
    rois: Sequence[tuple[str, tuple[int, int, int], list[npt.NDArray[np.float64]]]],
) -> Path:
    """An RT Structure Set over the CT files: ``rois`` = (name, RGB colour, contours),
    each contour an (n, 3) array of patient points (mm), CLOSED_PLANAR."""
    ct = [pydicom.dcmread(p, stop_before_pixels=True) for p in ct_paths]
    c0 = ct[0]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    ds.PatientID = c0.PatientID
    ds.PatientName = c0.PatientName
    ds.StudyInstanceUID = c0.StudyInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 60
    ds.SeriesDescription = "Plan structures"
    ds.StructureSetLabel = "Plan"
    ds.FrameOfReferenceUID = c0.FrameOfReferenceUID
    contour_images = DicomSequence()
    for c in ct:
        it = Dataset()
        it.ReferencedSOPClassUID = c.SOPClassUID
        it.ReferencedSOPInstanceUID = c.SOPInstanceUID
        contour_images.append(it)
    rseries = Dataset()
    rseries.SeriesInstanceUID = c0.SeriesInstanceUID
    rseries.ContourImageSequence = contour_images
    rstudy = Dataset()
    rstudy.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    rstudy.ReferencedSOPInstanceUID = c0.StudyInstanceUID
    rstudy.RTReferencedSeriesSequence = DicomSequence([rseries])
    rfor = Dataset()
    rfor.FrameOfReferenceUID = c0.FrameOfReferenceUID
    rfor.RTReferencedStudySequence = DicomSequence([rstudy])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([rfor])
    ssroi, roic, obs = DicomSequence(), DicomSequence(), DicomSequence()
    for i, (name, colour, contours) in enumerate(rois, start=1):
        r = Dataset()
        r.ROINumber = i
        r.ReferencedFrameOfReferenceUID = c0.FrameOfReferenceUID
        r.ROIName = name
        r.ROIGenerationAlgorithm = "MANUAL"
        ssroi.append(r)
        rc = Dataset()
        rc.ReferencedROINumber = i
        rc.ROIDisplayColor = list(colour)
        seq = DicomSequence()
        for pts in contours:
            c = Dataset()
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(pts)
            c.ContourData = [f"{v:.4f}" for v in np.asarray(pts, float).ravel()]
            seq.append(c)
        rc.ContourSequence = seq
        roic.append(rc)
        o = Dataset()
        o.ObservationNumber = i
        o.ReferencedROINumber = i
        o.RTROIInterpretedType = "ORGAN"
        o.ROIInterpreter = ""
        obs.append(o)
    ds.StructureSetROISequence = ssroi
    ds.ROIContourSequence = roic
    ds.RTROIObservationsSequence = obs
    ds.save_as(path, enforce_file_format=True)
    return path
