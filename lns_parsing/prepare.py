"""Convert per-patient DICOM (a CT series + an RTSTRUCT or a DICOM-SEG) into the nnU-Net-v2 raw
layout lns_parsing reads (see lns_parsing/data.py).

    python -m lns_parsing.prepare --dicom /data/dicom --names names.json --out /data/lns_real \
        [--anchors lung_R,lung_L,...] [--development p01,p02,...]

``--dicom`` holds one folder per patient (any file names; files are told apart by Modality).
``--names`` maps our names to the ROI / segment names found in the files::

    {"stations": {"1R": ["1R", "station 1R", "LN 1R"], ...},
     "organs":   {"trachea": ["Trachea"], "aorta_asc": ["Aorta ascending", "AAo"], ...}}

Matching ignores case, spaces, '-' and '_'. An ROI that matches no name is an error listing every
unmapped name per file (nothing is dropped silently); ``--ignore-roi NAME`` skips one on purpose.
RTSTRUCT contours are rasterised on the CT grid (pydicom + matplotlib.path, even-odd rule so
holes stay holes); SEG frames are placed on the CT slice at their ImagePositionPatient.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from common.data import DataFormatError
from lns_parsing.config import ANCHORS


def _norm(s: str) -> str:
    return re.sub(r"[\s_\-]+", "", str(s)).lower()


def name_lookup(names: dict) -> dict[str, tuple[str, str]]:
    """normalised synonym -> (kind, our name), kind in {stations, organs}."""
    out = {}
    for kind in ("stations", "organs"):
        for ours, syns in (names.get(kind) or {}).items():
            for s in [ours, *syns]:
                key = _norm(s)
                if key in out and out[key] != (kind, ours):
                    raise DataFormatError(f"names: '{s}' maps to both {out[key]} and {(kind, ours)}")
                out[key] = (kind, ours)
    return out


# ------------------------------------------------------------------------------------ CT

def read_ct_series(files: Sequence[Path]) -> tuple[np.ndarray, np.ndarray, list]:
    """HU volume (cols, rows, slices) and its RAS affine from CT slice files (pydicom); the
    datasets sorted along the slice normal."""
    import pydicom

    dss = [pydicom.dcmread(f) for f in files]
    iop = np.asarray(dss[0].ImageOrientationPatient, float)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    dss.sort(key=lambda d: float(np.dot(normal, np.asarray(d.ImagePositionPatient, float))))
    for d in dss:
        if not np.allclose(np.asarray(d.ImageOrientationPatient, float), iop, atol=1e-4):
            raise DataFormatError(f"{d.filename}: ImageOrientationPatient differs within the series")
    pos = np.array([np.asarray(d.ImagePositionPatient, float) for d in dss])
    dz = float(np.median(np.diff(pos @ normal))) if len(dss) > 1 else float(getattr(dss[0], "SliceThickness", 1.0))
    if len(dss) > 2 and np.ptp(np.diff(pos @ normal)) > 1e-2 * abs(dz) + 1e-3:
        raise DataFormatError(f"{dss[0].filename}: uneven slice spacing {np.unique(np.round(np.diff(pos @ normal), 3))}")
    ps = [float(v) for v in dss[0].PixelSpacing]  # (row spacing, column spacing)
    vol = np.stack([d.pixel_array.astype(np.float32) * float(getattr(d, "RescaleSlope", 1.0))
                    + float(getattr(d, "RescaleIntercept", 0.0)) for d in dss], -1)  # (rows, cols, slices)
    vol = vol.transpose(1, 0, 2)  # (cols, rows, slices): index i runs along the row direction cosine
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row * ps[1], col * ps[0], normal * dz, pos[0]
    return vol, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, dss


def _world_to_voxel(points_lps: np.ndarray, affine_ras: np.ndarray) -> np.ndarray:
    ras = points_lps * np.array([-1.0, -1.0, 1.0])
    inv = np.linalg.inv(affine_ras)
    return ras @ inv[:3, :3].T + inv[:3, 3]


# ------------------------------------------------------------------------------------ RTSTRUCT

def rasterise_rtstruct(ds, shape, affine_ras) -> dict[str, np.ndarray]:
    """{ROI name: bool mask on the CT grid}: each closed planar contour filled with
    matplotlib.path (voxel centres inside), combined with XOR per slice (holes)."""
    from matplotlib.path import Path as MPath

    names = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    centres = np.stack([ii.ravel(), jj.ravel()], 1)
    masks: dict[str, np.ndarray] = {}
    for roi in getattr(ds, "ROIContourSequence", []):
        name = names.get(int(roi.ReferencedROINumber), f"ROI{roi.ReferencedROINumber}")
        m = masks.setdefault(name, np.zeros(shape, bool))
        for c in getattr(roi, "ContourSequence", []):
            pts = np.asarray(c.ContourData, float).reshape(-1, 3)
            vox = _world_to_voxel(pts, affine_ras)
            k = int(np.rint(vox[:, 2].mean()))
            if np.ptp(vox[:, 2]) > 0.5 or not 0 <= k < shape[2]:
                raise DataFormatError(f"{ds.filename}: ROI '{name}' has a contour off the CT slices (k={vox[:, 2].min():.2f}"
                                      f"..{vox[:, 2].max():.2f})")
            inside = MPath(vox[:, :2]).contains_points(centres).reshape(shape[:2])
            m[:, :, k] ^= inside
    return masks


# ------------------------------------------------------------------------------------ SEG

def read_seg(ds, shape, affine_ras) -> dict[str, np.ndarray]:
    """{segment label: bool mask on the CT grid} from a DICOM-SEG: each frame goes to the CT
    slice at its ImagePositionPatient."""
    labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in ds.SegmentSequence}
    frames = ds.pixel_array
    if frames.ndim == 2:
        frames = frames[None]
    masks: dict[str, np.ndarray] = {}
    for f, fg in enumerate(ds.PerFrameFunctionalGroupsSequence):
        seg_no = int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        ipp = np.asarray(fg.PlanePositionSequence[0].ImagePositionPatient, float)
        k = _world_to_voxel(ipp[None], affine_ras)[0]
        kk = int(np.rint(k[2]))
        if abs(k[2] - kk) > 0.25 or not 0 <= kk < shape[2] or frames.shape[1:] != (shape[1], shape[0]):
            raise DataFormatError(f"{ds.filename}: frame {f} (segment {seg_no}) does not lie on a CT slice")
        name = labels.get(seg_no, f"segment{seg_no}")
        masks.setdefault(name, np.zeros(shape, bool))[:, :, kk] |= frames[f].T.astype(bool)
    return masks


# ------------------------------------------------------------------------------------ one patient

def convert_patient(folder: Path, lookup: dict, station_names: list[str], organ_names: list[str],
                    ignore: set[str] = frozenset()) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(HU, stations, organs, RAS affine) of one patient folder."""
    import pydicom

    ct_files, struct = [], []
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - not a DICOM file
            continue
        mod = str(getattr(ds, "Modality", ""))
        if mod == "CT":
            ct_files.append(f)
        elif mod in ("RTSTRUCT", "SEG"):
            struct.append(f)
    if not ct_files:
        raise DataFormatError(f"{folder}: no CT series")
    if not struct:
        raise DataFormatError(f"{folder}: no RTSTRUCT or SEG file")
    hu, aff, _ = read_ct_series(ct_files)
    stations = np.zeros(hu.shape, np.uint8)
    organs = np.zeros(hu.shape, np.uint8)
    unmapped = []
    for f in struct:
        ds = pydicom.dcmread(f)
        masks = rasterise_rtstruct(ds, hu.shape, aff) if ds.Modality == "RTSTRUCT" else read_seg(ds, hu.shape, aff)
        for name, m in masks.items():
            if _norm(name) in {_norm(i) for i in ignore}:
                continue
            hit = lookup.get(_norm(name))
            if hit is None:
                unmapped.append(name)
                continue
            kind, ours = hit
            if kind == "stations":
                stations[m] = station_names.index(ours) + 1
            else:
                organs[m] = organ_names.index(ours) + 1
        if unmapped:
            raise DataFormatError(f"{f}: ROI/segment names not in --names (add synonyms or --ignore-roi): {sorted(set(unmapped))}")
    return hu, stations, organs, aff


def prepare(dicom_root: Path, names: dict, out: Path, anchors: Sequence[str] | None = None,
            development: Sequence[str] = (), ignore: set[str] = frozenset()) -> Path:
    station_names, organ_names = list(names["stations"]), list(names["organs"])
    lookup = name_lookup(names)
    anchors = [a for a in (anchors or ANCHORS) if a in organ_names]
    patients = sorted(p for p in Path(dicom_root).iterdir() if p.is_dir())
    if not patients:
        raise DataFormatError(f"{dicom_root}: no patient folders")
    for d in ("imagesTr", "labelsTr", "organsTr"):
        (out / d).mkdir(parents=True, exist_ok=True)
    for p in patients:
        hu, st, og, aff = convert_patient(p, lookup, station_names, organ_names, ignore)
        for folder, arr, name in (("imagesTr", np.rint(hu).astype(np.int16), f"{p.name}_0000.nii.gz"),
                                  ("labelsTr", st, f"{p.name}.nii.gz"), ("organsTr", og, f"{p.name}.nii.gz")):
            img = nib.Nifti1Image(arr, aff)
            img.set_qform(aff, code=1)
            img.set_sform(aff, code=1)
            nib.save(img, out / folder / name)
    ds = {"channel_names": {"0": "CT"}, "labels": {"background": 0, **{s: i + 1 for i, s in enumerate(station_names)}},
          "organs": {"background": 0, **{o: i + 1 for i, o in enumerate(organ_names)}}, "anchors": anchors,
          "numTraining": len(patients), "file_ending": ".nii.gz"}
    if development:
        ds["development"] = list(development)
    (out / "dataset.json").write_text(json.dumps(ds, indent=2) + "\n")
    return out


# ------------------------------------------------------------------------------------ export (tests, demos)

def export_dicom(folder: Path, hu: np.ndarray, affine_ras: np.ndarray, rois: dict[str, np.ndarray],
                 patient_id: str = "PHANTOM") -> Path:
    """Write a RAS-ordered HU volume as a CT series and the masks as an RTSTRUCT (contours traced
    with contourpy at the 0.5 level). Axis-aligned affines only. Used by the round-trip test."""
    import contourpy
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    sp = np.abs(np.diag(affine_ras)[:3])
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_ras
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    ct_uids = []

    def base(sop_class, sop_uid, modality):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop_class, sop_uid, modality
        ds.PatientID, ds.PatientName, ds.StudyInstanceUID, ds.FrameOfReferenceUID = patient_id, patient_id, study, frame
        return ds

    for k in range(hu.shape[2]):
        uid = generate_uid()
        ct_uids.append(uid)
        ds = base("1.2.840.10008.5.1.4.1.1.2", uid, "CT")
        ds.SeriesInstanceUID, ds.InstanceNumber = series, k + 1
        ds.ImageOrientationPatient = [float(v) for v in (*(lps[:3, 0] / sp[0]), *(lps[:3, 1] / sp[1]))]
        ds.ImagePositionPatient = [float(v) for v in lps[:3, :3] @ np.array([0, 0, k]) + lps[:3, 3]]
        ds.PixelSpacing = [float(sp[1]), float(sp[0])]
        ds.SliceThickness = float(sp[2])
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = (np.rint(hu[:, :, k].T) + 1024).astype(np.int16).tobytes()
        ds.save_as(folder / f"ct_{k:04d}.dcm", enforce_file_format=True)

    rs = base("1.2.840.10008.5.1.4.1.1.481.3", generate_uid(), "RTSTRUCT")
    rs.SeriesInstanceUID = generate_uid()
    rs.StructureSetROISequence, rs.ROIContourSequence = [], []
    for n, (name, mask) in enumerate(rois.items(), start=1):
        roi = pydicom.Dataset()
        roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = n, name, frame
        rs.StructureSetROISequence.append(roi)
        rc = pydicom.Dataset()
        rc.ReferencedROINumber, rc.ContourSequence = n, []
        for k in np.nonzero(mask.any((0, 1)))[0]:
            sl = np.pad(mask[:, :, k].astype(float), 1)
            for line in contourpy.contour_generator(z=sl.T).lines(0.5):  # (x = i + 1, y = j + 1) points
                ijk = np.c_[line[:, 0] - 1, line[:, 1] - 1, np.full(len(line), k)]
                pts = ijk @ lps[:3, :3].T + lps[:3, 3]
                c = pydicom.Dataset()
                c.ContourGeometricType, c.NumberOfContourPoints = "CLOSED_PLANAR", len(pts)
                c.ContourData = [float(round(v, 4)) for v in pts.ravel()]
                ci = pydicom.Dataset()
                ci.ReferencedSOPClassUID, ci.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", ct_uids[k]
                c.ContourImageSequence = [ci]
                rc.ContourSequence.append(c)
        rs.ROIContourSequence.append(rc)
    rs.save_as(folder / "rtstruct.dcm", enforce_file_format=True)
    return folder


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dicom", required=True, help="folder with one sub-folder of DICOM files per patient")
    ap.add_argument("--names", required=True, help="JSON mapping our station/organ names to ROI/segment synonyms")
    ap.add_argument("--out", required=True, help="the nnU-Net raw folder to write")
    ap.add_argument("--anchors", default=",".join(ANCHORS), help="comma-separated anchor organs")
    ap.add_argument("--development", default="", help="comma-separated development cases (organ nets, search)")
    ap.add_argument("--ignore-roi", action="append", default=[], help="an ROI name to skip on purpose (repeatable)")
    a = ap.parse_args(argv)
    names = json.loads(Path(a.names).read_text())
    out = prepare(Path(a.dicom), names, Path(a.out), a.anchors.split(","),
                  [d for d in a.development.split(",") if d], set(a.ignore_roi))
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
