"""What a DICOM output says about itself: series number and description, research-use notice,
equipment, and the codes of LRP-derived segments.

A reader in a PACS sees, per output series:
  SeriesDescription  "RUO SEG unet-defects@1 LRP conserving" (RUO = research use only; dropped
                     when the model declares ``"research_use_only": false``), at most 64 characters
  SeriesNumber       base + 10 x source SeriesNumber + 1 (SEG) or + 2 (relevance map); base + 1/2
                     when the source has no SeriesNumber (base: LRPSEG_DICOM_SERIES_BASE, 1000)
  ImageComments      the research-use notice, what produced the series, and any warning of the job
                     (a domain mismatch run on request)
  ContentCreatorName "LRPSEG"; Manufacturer "lrpseg"; ManufacturerModelName the model's name;
                     SoftwareVersions ("lrpseg <version>", "<model>@<version>")
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom import Dataset

from lrpseg import __version__

__all__ = [
    "EXPLANATION_CATEGORY",
    "RELEVANCE_OFFSET",
    "RELEVANT_REGION",
    "RUO",
    "SEG_OFFSET",
    "OutputLabels",
]

Triplet = tuple[str, str, str]

RUO = "RUO"
SEG_OFFSET = 1
RELEVANCE_OFFSET = 2
MAX_LO = 64
MAX_LT = 10240
CREATOR = "LRPSEG"
MANUFACTURER = "lrpseg"
# An LRP mask is no finding of the model: it is where the explanation puts the explained class.
# Its category says so (a private code: no standard one exists); its type is the explained class's.
EXPLANATION_CATEGORY: Triplet = ("99LRPSEG", "LRPEXPL", "Model explanation region")
RELEVANT_REGION: Triplet = ("99LRPSEG", "LRPREL", "Relevant region")  # type when no class is explained


@dataclass(frozen=True)
class OutputLabels:
    """How every DICOM output of one job is labelled (see the module docstring)."""

    model_name: str
    model_version: str
    method: str = ""  # "LRP conserving", "Seg-Grad-CAM", "segmentation"
    research_use_only: bool = True
    series_base: int = 1000
    notes: tuple[str, ...] = ()  # warnings of the job, written into ImageComments

    @property
    def model_id(self) -> str:
        return f"{self.model_name}@{self.model_version}"

    def series_number(self, source: Dataset | None, offset: int) -> int:
        number = source.get("SeriesNumber") if source is not None else None
        try:
            base = self.series_base + 10 * int(number) if number is not None and str(number).strip() else None
        except (TypeError, ValueError):
            base = None
        return min((self.series_base if base is None else base) + offset, 2**31 - 1)

    def series_description(self, what: str) -> str:
        parts = [RUO] if self.research_use_only else []
        parts += [what, self.model_id, self.method]
        return " ".join(p for p in parts if p)[:MAX_LO]

    def comments(self, what: str) -> str:
        notice = "RESEARCH USE ONLY - not for diagnostic or clinical use. " if self.research_use_only else ""
        made = f"{what} by lrpseg {__version__}, model {self.model_id}"
        text = f"{notice}{made}{f' ({self.method})' if self.method else ''}."
        if self.notes:
            text += " Warnings: " + " | ".join(self.notes)
        return "".join(c if c >= " " else " " for c in text)[:MAX_LT]

    def apply(self, obj: Dataset, what: str, source: Dataset | None, offset: int) -> None:
        """Write the labels into a built output (SEG, Parametric Map, Secondary Capture)."""
        obj.SeriesNumber = self.series_number(source, offset)
        obj.SeriesDescription = self.series_description(what)
        obj.ImageComments = self.comments(what)
        obj.ContentCreatorName = CREATOR
        obj.Manufacturer = MANUFACTURER
        obj.ManufacturerModelName = self.model_name[:MAX_LO]
        obj.SoftwareVersions = [f"lrpseg {__version__}", self.model_id[:MAX_LO]]
        if self.research_use_only and "ContentDescription" in obj:
            obj.ContentDescription = f"{RUO} {obj.ContentDescription}"[:MAX_LO]
