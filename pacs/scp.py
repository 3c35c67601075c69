"""The DIMSE C-STORE SCP (`lrpseg dimse`): instances a PACS or modality sends go into the same
series intake as STOW-RS (same routing, same limits); the API's sweeper makes the jobs.

Only the calling AE titles of LRPSEG_DIMSE_ALLOWED_AES may associate (others are rejected:
"calling AE title not recognised"); each maps to the API key whose jobs its series become.
Verification (C-ECHO) is supported. pynetdicom's own logging is kept at WARNING: at INFO and
below it prints data set contents (patient data).
"""

from __future__ import annotations

import logging
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer
from redis.exceptions import RedisError

from core.settings import Settings
from pacs.instances import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, InstanceRefused
from pacs.receive import Receiver

SUCCESS = 0x0000
NOT_AUTHORISED = 0x0124
log = logging.getLogger("lrpseg.dimse")


class StoreHandler:
    """EVT_C_STORE: one instance into the intake; the C-STORE status says how it went."""

    def __init__(self, receiver: Receiver, owners: dict[str, str]) -> None:
        self.receiver = receiver
        self.owners = owners

    def __call__(self, event: Any) -> int:
        title = str(event.assoc.requestor.ae_title).strip()
        owner = self.owners.get(title)
        if owner is None:  # associations are filtered by calling AE already; never store unowned data
            return NOT_AUTHORISED
        try:
            data = event.encoded_dataset(include_meta=True)
        except Exception:  # a data set pynetdicom cannot re-encode is the sender's fault
            return CANNOT_UNDERSTAND
        try:
            self.receiver.receive(owner, data)
        except InstanceRefused as exc:
            log.info("C-STORE from %s refused: 0x%04X %s", title, exc.reason, exc.detail)
            return exc.reason
        except RedisError as exc:  # the store is away: the sender retries later
            log.warning("C-STORE from %s: Redis unavailable (%s)", title, type(exc).__name__)
            return OUT_OF_RESOURCES
        return SUCCESS


def build_ae(settings: Settings) -> AE:
    """The SCP's application entity: every storage SOP class in every transfer syntax pydicom
    knows (the series decoder handles the compressed ones), Verification, calling AEs filtered."""
    ae = AE(ae_title=settings.dimse_ae_title)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(str(context.abstract_syntax), ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    ae.require_calling_aet = list(settings.dimse_owners())
    return ae


def start(settings: Settings, receiver: Receiver, port: int | None = None) -> ThreadedAssociationServer:
    """Listen (in background threads) on dimse_host:dimse_port (or `port`; 0 = any free one)."""
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    if not settings.dimse_allowed_aes:
        raise ValueError("LRPSEG_DIMSE_ALLOWED_AES is empty: no calling AE could send (AE or AE=key-name, ...)")
    ae = build_ae(settings)
    handlers: list[Any] = [(evt.EVT_C_STORE, StoreHandler(receiver, settings.dimse_owners()))]
    address = (settings.dimse_host, settings.dimse_port if port is None else port)
    server = ae.start_server(address, block=False, evt_handlers=handlers)
    assert server is not None  # block=False returns the running server
    return server
