"""A synthetic but real CT series: an anatomical-ish phantom written as DICOM files.

Used by the sample data, the tests and the benchmarks. The volume is built in Hounsfield
units (:func:`ct_phantom_volume`) and written by :func:`write_ct_phantom` as one CT Image
Storage file per slice (PS3.3 A.3), stored ``int16`` with Rescale Slope 1 and Rescale
Intercept -1024 (stored = HU + 1024), two stored windows, a Pixel Padding Value outside
the reconstruction circle (C.7.5.1.1.2) and Image Position / Orientation (Patient)
(C.7.6.2). Everything is deterministic for a given ``seed``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLossless,
    JPEGLosslessSV1,
    generate_uid,
)

__all__ = [
    "HU_AIR",
    "HU_PADDING",
    "RESCALE_INTERCEPT",
    "STORED_PADDING",
    "bead_volume",
    "ct_phantom_volume",
    "encode_jpeg_lossless",
    "read_hu",
    "voxel_positions",
    "write_ct_phantom",
    "write_enhanced_ct",
]

RESCALE_INTERCEPT = -1024
#: Pixel Padding Value (0028,0120) as stored, and in HU
STORED_PADDING = -2000
HU_PADDING = STORED_PADDING + RESCALE_INTERCEPT  # -3024
HU_AIR = -1000
HU_FAT = -100
HU_SOFT = 40
HU_LIVER = 60
HU_LUNG = -850
HU_VESSEL = 40
HU_BONE_MARROW = 700
HU_BONE_CORTEX = 1500
HU_RIB = 1000

#: transfer syntaxes encoded here with imagecodecs' lossless JPEG (predictor 1)
_LJPEG_SYNTAXES = (JPEGLosslessSV1, JPEGLossless)
_NATIVE_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)


def _ellipse(
    x: npt.NDArray[Any], y: npt.NDArray[Any], cx: float, cy: float, a: float, b: float
) -> npt.NDArray[np.bool_]:
    inside: npt.NDArray[np.bool_] = ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1.0
    return inside


def ct_phantom_volume(
    n_slices: int = 40, size: int = 128, *, seed: int = 0, noise: float = 8.0
) -> npt.NDArray[np.int16]:
    """The phantom in HU, shape ``(n_slices, size, size)``, ``int16``.

    Index 0 along the first axis is the most inferior slice (liver level), the last the most
    superior (lungs). Rows go anterior -> posterior, columns patient right -> left, as in an
    axial CT image. Outside the reconstruction circle (radius ``size / 2``) the value is
    :data:`HU_PADDING` (-3024); inside: air -1000, a body ellipse of fat (-100) around
    soft tissue (40), liver (60), lungs (-850) with vessels (40), a vertebra (marrow 700,
    cortex 1500) and ribs (1000). ``noise`` adds deterministic Gaussian noise (standard
    deviation in HU, rounded) inside the body only.
    """
    if n_slices < 1 or size < 8:
        raise ValueError(f"phantom needs n_slices >= 1 and size >= 8 (got {n_slices}, {size})")
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0  # pixel centres in [-1, 1]
    x = c[np.newaxis, :]  # columns: patient right (-1) -> left (+1)
    y = c[:, np.newaxis]  # rows: anterior (-1) -> posterior (+1)
    rr = x * x + y * y
    outside_fov = rr > 1.0
    body_out = _ellipse(x, y, 0.0, 0.05, 0.86, 0.62)
    body_in = _ellipse(x, y, 0.0, 0.05, 0.80, 0.56)
    spine_cortex = _ellipse(x, y, 0.0, 0.40, 0.12, 0.11)
    spine_marrow = _ellipse(x, y, 0.0, 0.40, 0.09, 0.08)
    canal = _ellipse(x, y, 0.0, 0.55, 0.045, 0.04)
    # ribs: small ellipses just inside the body outline
    ribs = np.zeros((size, size), dtype=bool)
    for ang in np.deg2rad([25, 50, 75, 105, 130, 155, 205, 230, 250, 290, 310, 335]):
        rx, ry = 0.0 + 0.74 * math.cos(ang), 0.05 + 0.51 * math.sin(ang)
        ribs |= _ellipse(x, y, rx, ry, 0.035, 0.03)
    rng = np.random.default_rng(seed)
    vessels = [(float(rng.uniform(-0.3, 0.3)), float(rng.uniform(-0.3, 0.3)),
                float(rng.uniform(0.015, 0.04))) for _ in range(14)]
    out = np.empty((n_slices, size, size), dtype=np.int16)
    for k in range(n_slices):
        t = (k + 0.5) / n_slices  # 0 = inferior, 1 = superior
        s = np.full((size, size), HU_AIR, dtype=np.int16)
        s[body_out] = HU_FAT
        s[body_in] = HU_SOFT
        if t < 0.55:  # liver on the patient's right (image left), shrinking upwards
            f = 1.0 - t / 0.55
            liver = _ellipse(x, y, -0.32, 0.0, 0.30 + 0.12 * f, 0.30 + 0.08 * f) & body_in
            s[liver] = HU_LIVER
        if t > 0.40:  # lungs, growing upwards, with vessels
            f = min(1.0, (t - 0.40) / 0.35)
            for side in (-1.0, 1.0):
                lung = _ellipse(x, y, side * 0.40, 0.02, 0.10 + 0.22 * f, 0.16 + 0.26 * f)
                s[lung & body_in] = HU_LUNG
                for vx, vy, vr in vessels:
                    ves = _ellipse(x, y, side * 0.40 + vx * f, 0.02 + vy * f, vr, vr)
                    s[ves & lung & body_in] = HU_VESSEL
        s[spine_cortex] = HU_BONE_CORTEX
        s[spine_marrow] = HU_BONE_MARROW
        s[canal] = HU_SOFT
        if t > 0.30:
            s[ribs] = HU_RIB
        if noise > 0:
            n = np.rint(rng.normal(0.0, noise, size=(size, size))).astype(np.int16)
            s[body_out] += n[body_out]
        s[outside_fov] = HU_PADDING
        out[k] = s
    return out


def encode_jpeg_lossless(frame: npt.NDArray[np.integer], bits: int = 16) -> bytes:
    """Encode one 2-D grey frame as JPEG Lossless, Process 14, predictor 1 (SV1).

    pydicom 3 has no JPEG Lossless encoder; imagecodecs' libjpeg-turbo one writes a
    first-order-prediction (Selection Value 1) stream, point transform 0. Signed data are
    encoded as their two's-complement bit pattern (PS3.5 8.2.1: the decoder returns the
    bits, Pixel Representation restores the sign).
    """
    import imagecodecs

    a = np.ascontiguousarray(frame)
    if a.dtype.kind == "i":
        a = a.view(a.dtype.str.replace("i", "u"))
    if bits > 8 and a.dtype.itemsize == 1:
        a = a.astype(np.uint16)
    out = imagecodecs.jpeg8_encode(a, lossless=True, predictor=1, bitspersample=bits)
    return bytes(out)


def _default_uid(*parts: object) -> UID:
    return generate_uid(entropy_srcs=["napari-dicom-phantom", *map(str, parts)])


def write_ct_phantom(
    folder: str | os.PathLike[str],
    n_slices: int = 40,
    size: int = 128,
    spacing: tuple[float, float, float] = (2.5, 0.7, 0.7),
    *,
    shuffle_instance_numbers: bool = True,
    transfer_syntax: str = ExplicitVRLittleEndian,
    series_number: int = 1,
    series_description: str = "Phantom CT",
    patient_id: str = "PHANTOM",
    study_uid: str | None = None,
    series_uid: str | None = None,
    seed: int = 0,
    origin: tuple[float, float, float] | None = None,
    file_names: str = "IM%04d",
    extension: str = "",
    orientation: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    slice_thickness: float | None = None,
    skip: Sequence[int] = (),
    tilt_deg: float = 0.0,
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    volume: npt.NDArray[np.int16] | None = None,
    noise: float = 8.0,
    header_style: str = "ge",
    stored_window: bool = True,
) -> list[Path]:
    """Write the phantom as a multi-file CT series into ``folder``; return the paths.

    Parameters
    ----------
    n_slices, size
        Slices and the image size (square).
    spacing
        ``(slice spacing, row spacing, column spacing)`` in mm; Pixel Spacing (0028,0030)
        is ``[row, column]`` spacing.
    shuffle_instance_numbers
        Give Instance Numbers (and file names) in a random order against the slice
        position, so that only Image Position (Patient) sorts correctly.
    transfer_syntax
        Native (Explicit/Implicit VR Little Endian, Explicit Big Endian), JPEG Lossless
        (Process 14 / SV1, encoded with imagecodecs) or any syntax pydicom 3 can encode
        (RLE Lossless, JPEG-LS Lossless, JPEG 2000 Lossless).
    origin
        Image Position (Patient) of slice 0; default centres the image on the z axis at
        z = 0.
    file_names, extension
        File name pattern (``%`` the instance number) and suffix, e.g. ``".dcm"``.
    orientation
        Image Orientation (Patient); slices advance along row x column.
    slice_thickness
        Slice Thickness (0018,0050); default the slice spacing.
    skip
        Slice indices (in position order) not written, e.g. to make a gap.
    tilt_deg
        Gantry tilt: each slice's position moves along the column direction by
        ``dz * tan(tilt)``, the orientation stays as given (positions leave the normal).
    volume
        HU values to write instead of :func:`ct_phantom_volume` (``(n, size, size)``).
    header_style
        How the stored values are laid out, as scanners commonly write CT (all with Rescale
        Slope 1, Intercept -1024): ``"ge"`` signed 16 bits stored, with the Pixel Padding
        Value; ``"siemens"`` unsigned, 12 of 16 bits stored (High Bit 11), no padding
        (values below -1024 HU become -1024); ``"philips"`` unsigned, 16 bits stored,
        no padding (values below -1024 HU become -1024), slope and intercept written as
        ``"1.0"`` and ``"-1024.0"``.
    stored_window
        Write the two windows (soft tissue, lung); ``False`` writes none (no Window Center /
        Width, no VOI LUT), as some CT exports do.

    Returns
    -------
    list of Path
        The written files, in slice-position order (skipped slices left out).
    """
    if header_style not in ("ge", "siemens", "philips"):
        raise ValueError(f"header_style must be 'ge', 'siemens' or 'philips', not {header_style!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ts = UID(transfer_syntax)
    signed = header_style == "ge"
    bits = 12 if header_style == "siemens" else 16
    dz, dr, dc = (float(v) for v in spacing)
    row_cos = np.asarray(orientation[:3], dtype=float)
    col_cos = np.asarray(orientation[3:], dtype=float)
    normal = np.cross(row_cos, col_cos)
    if origin is None:
        o = -(size / 2.0) * (dc * row_cos + dr * col_cos)
    else:
        o = np.asarray(origin, dtype=float)
    hu = ct_phantom_volume(n_slices, size, seed=seed, noise=noise) if volume is None else volume
    if hu.shape[1:] != (size, size) or hu.shape[0] != n_slices:
        raise ValueError(f"volume shape {hu.shape} != ({n_slices}, {size}, {size})")
    rng = np.random.default_rng(seed + 1)
    numbers = (rng.permutation(n_slices) + 1) if shuffle_instance_numbers else (
        np.arange(n_slices) + 1)
    study_uid = study_uid or _default_uid(patient_id, "study", seed)
    series_uid = series_uid or _default_uid(study_uid, series_number, series_description, seed)
    frame_uid = _default_uid(study_uid, "frame", seed)
    tan_tilt = math.tan(math.radians(tilt_deg))
    thick = dz if slice_thickness is None else float(slice_thickness)
    paths: list[Path] = []
    skipped = set(int(i) for i in skip)
    for k in range(n_slices):
        if k in skipped:
            continue
        inst = int(numbers[k])
        pos = o + k * dz * normal + k * dz * tan_tilt * col_cos
        # unique per image: series, instance, and where and how big it is (a localizer
        # written into the same series is another image)
        sop_uid = _default_uid(series_uid, inst, size, tuple(np.round(pos, 4)), row_cos, col_cos)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ts
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = list(image_type)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = "20240101"
        ds.SeriesDate = "20240101"
        ds.StudyTime = "120000"
        ds.AccessionNumber = ""
        ds.Modality = "CT"
        ds.Manufacturer = "napari-dicom phantom"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "Phantom study"
        ds.SeriesDescription = series_description
        ds.PatientName = "Phantom^CT"
        ds.PatientID = patient_id
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.BodyPartExamined = "CHEST"
        ds.SliceThickness = f"{thick:g}"
        ds.KVP = "120"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = series_number
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = inst
        ds.ImagePositionPatient = [f"{v:.6g}" for v in pos]
        ds.ImageOrientationPatient = [f"{v:.6g}" for v in orientation]
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = f"{float(pos @ normal):.6g}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = size
        ds.Columns = size
        ds.PixelSpacing = [f"{dr:g}", f"{dc:g}"]
        ds.BitsAllocated = 16
        ds.BitsStored = bits
        ds.HighBit = bits - 1
        ds.PixelRepresentation = 1 if signed else 0
        if signed:
            ds.add_new(0x00280120, "SS", STORED_PADDING)  # Pixel Padding Value
        if stored_window:
            ds.WindowCenter = ["40", "-600"]
            ds.WindowWidth = ["400", "1500"]
            ds.WindowCenterWidthExplanation = ["SOFT TISSUE", "LUNG"]
        philips = header_style == "philips"
        ds.RescaleIntercept = f"{RESCALE_INTERCEPT}.0" if philips else str(RESCALE_INTERCEPT)
        ds.RescaleSlope = "1.0" if philips else "1"
        ds.RescaleType = "HU"
        sv = hu[k].astype(np.int32) - RESCALE_INTERCEPT
        stored = sv.astype(np.int16) if signed else np.clip(sv, 0, (1 << bits) - 1).astype(
            np.uint16)
        if ts in _LJPEG_SYNTAXES:
            ds.PixelData = encapsulate([encode_jpeg_lossless(stored, bits)])
            ds["PixelData"].VR = "OB"
            ds["PixelData"].is_undefined_length = True
        elif ts in _NATIVE_SYNTAXES:
            ds.PixelData = stored.tobytes() if ts != ExplicitVRBigEndian else (
                stored.astype(stored.dtype.newbyteorder(">")).tobytes())
            ds["PixelData"].VR = "OW"
        else:
            ds.PixelData = stored.tobytes()
            ds["PixelData"].VR = "OW"
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.compress(ts, stored)
        name = (file_names % inst if "%" in file_names else f"{file_names}{inst:04d}") + extension
        path = folder / name
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def read_hu(path: str | os.PathLike[str]) -> npt.NDArray[np.int32]:
    """Decode one phantom file with pydicom and apply its rescale (tests use this)."""
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array.astype(np.int32)
    return arr * int(ds.RescaleSlope) + int(ds.RescaleIntercept)


def write_text_sr(path: str | os.PathLike[str], patient_id: str = "PHANTOM") -> Path:
    """Write a minimal Basic Text SR document: a DICOM object without an image, such as
    those found beside the images on a CD (reports, structure sets, key objects)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.88.11")  # Basic Text SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "SR"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.ValueType = "CONTAINER"
    out = Path(path)
    ds.save_as(out, enforce_file_format=True)
    return out


def voxel_positions(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    orientation: Sequence[float],
    origin: Sequence[float],
) -> npt.NDArray[np.float64]:
    """Patient (LPS) position of every voxel centre, ``(*shape, 3)`` mm, by the definition
    of Image Position / Orientation (Patient) (PS3.3 C.7.6.2.1.1): slice ``k`` starts at
    ``origin + k * dz * normal``; row ``r`` moves along the column cosine by the row
    spacing, column ``c`` along the row cosine by the column spacing."""
    dz, dr, dc = spacing
    row_cos = np.asarray(orientation[:3], dtype=float)
    col_cos = np.asarray(orientation[3:6], dtype=float)
    normal = np.cross(row_cos, col_cos)
    k, r, c = (np.arange(n, dtype=float) for n in shape)
    out: npt.NDArray[np.float64] = (
        np.asarray(origin, dtype=float)
        + k[:, None, None, None] * dz * normal
        + r[None, :, None, None] * dr * col_cos
        + c[None, None, :, None] * dc * row_cos
    )
    return out


def bead_volume(
    beads: Sequence[Sequence[float]],
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    orientation: Sequence[float],
    origin: Sequence[float],
    radius: float = 2.5,
) -> npt.NDArray[np.int16]:
    """A geometry phantom in HU: bead ``j`` (a ball of ``radius`` mm around the patient
    point ``beads[j]``) is ``100 * (j + 1)``, and the one voxel nearest its centre (the
    bead's voxel) ``100 * (j + 1) + 50``; 0 elsewhere. Sampled on the grid that
    :func:`write_ct_phantom` writes with the same ``spacing``/``orientation``/``origin``, so
    any orientation of one set of beads can be written as a series."""
    pos = voxel_positions(shape, spacing, orientation, origin)
    out = np.zeros(shape, dtype=np.int16)
    for j, b in enumerate(beads):
        d = np.linalg.norm(pos - np.asarray(b, dtype=float), axis=-1)
        out[d <= radius] = 100 * (j + 1)
        out[np.unravel_index(int(np.argmin(d)), shape)] = 100 * (j + 1) + 50
    return out


def write_enhanced_ct(
    path: str | os.PathLike[str],
    volume: npt.NDArray[np.int16],
    spacing: tuple[float, float, float],
    orientation: Sequence[float],
    origin: Sequence[float],
    *,
    study_uid: str,
    frame_uid: str | None = None,
    series_number: int = 9,
    frame_order: Sequence[int] | None = None,
) -> Path:
    """``volume`` (HU) as one Enhanced CT Image Storage file (PS3.3 A.38): positions per
    frame in the Per-frame Functional Groups (Plane Position), orientation, pixel
    measures and rescale in the Shared Functional Groups (C.7.6.16); the frames stored in
    ``frame_order`` (default reversed, so only the positions sort them)."""
    n, rows, cols = volume.shape
    dz, dr, dc = (float(v) for v in spacing)
    row_cos = np.asarray(orientation[:3], dtype=float)
    col_cos = np.asarray(orientation[3:6], dtype=float)
    normal = np.cross(row_cos, col_cos)
    o = np.asarray(origin, dtype=float)
    order = list(frame_order) if frame_order is not None else list(range(n))[::-1]
    series_uid = _default_uid(study_uid, "enhanced", series_number)
    sop_uid = _default_uid(series_uid, "instance")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.2.1")
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid or _default_uid(study_uid, "frame", 0)
    ds.Modality = "CT"
    ds.PatientID = "PHANTOM"
    ds.PatientName = "Phantom^CT"
    ds.SeriesNumber = series_number
    ds.SeriesDescription = "Enhanced CT"
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.NumberOfFrames = n
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = [f"{dr:g}", f"{dc:g}"]
    pm.SliceThickness = f"{dz:g}"
    shared.PixelMeasuresSequence = [pm]
    po = Dataset()
    po.ImageOrientationPatient = [f"{v:.6g}" for v in orientation]
    shared.PlaneOrientationSequence = [po]
    pvt = Dataset()
    pvt.RescaleIntercept = str(RESCALE_INTERCEPT)
    pvt.RescaleSlope = "1"
    pvt.RescaleType = "HU"
    shared.PixelValueTransformationSequence = [pvt]
    voi = Dataset()
    voi.WindowCenter = "40"
    voi.WindowWidth = "400"
    shared.FrameVOILUTSequence = [voi]
    ds.SharedFunctionalGroupsSequence = [shared]
    per = []
    for i, k in enumerate(order):
        item = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = [f"{v:.6g}" for v in o + k * dz * normal]
        item.PlanePositionSequence = [pp]
        fc = Dataset()
        fc.InStackPositionNumber = k + 1
        fc.DimensionIndexValues = [i + 1]
        item.FrameContentSequence = [fc]
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = per
    stored = (volume[order].astype(np.int32) - RESCALE_INTERCEPT).astype(np.int16)
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out
