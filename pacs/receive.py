"""One received instance into its series' intake: read, check, route, store (STOW-RS and C-STORE alike)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pacs.instances import DOES_NOT_MATCH_SOP_CLASS, PROCESSING_FAILURE, InstanceHeader, InstanceRefused, read_header
from pacs.intake import SeriesIntake, Stored
from pacs.routes import route_model


@dataclass(frozen=True)
class Receiver:
    """What receiving needs: the intake, the routing rules, and a check that a model exists
    (`known(model)` -> an error text or None; the SCP, which loads no registry, passes None)."""

    intake: SeriesIntake
    known: Callable[[str], str | None] | None = None

    def receive(
        self, owner: str, data: bytes, model: str | None = None, study: str | None = None
    ) -> tuple[InstanceHeader, Stored]:
        """Store the instance for `owner` (InstanceRefused says why not); `study`: the one the URL names."""
        header = read_header(data)
        return header, self.store(owner, header, data, model, study)

    def store(
        self, owner: str, header: InstanceHeader, data: bytes, model: str | None = None, study: str | None = None
    ) -> Stored:
        """`receive` for an instance whose header was read already."""
        if study is not None and header.study != study:
            raise InstanceRefused(DOES_NOT_MATCH_SOP_CLASS, "StudyInstanceUID differs from the study in the URL")
        chosen = route_model(self.intake.settings.dicom_routes, header.attributes, model)
        if self.known is not None:
            problem = self.known(chosen)
            if problem is not None:
                raise InstanceRefused(PROCESSING_FAILURE, problem)
        return self.intake.add(owner, header, data, chosen)
