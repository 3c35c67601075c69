"""The C-STORE SCP with pynetdicom's SCU: a series stored over DIMSE becomes a job a real RQ worker
finishes; unknown calling AEs are rejected; C-ECHO answers."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from core.settings import Settings
from pacs.intake import SeriesIntake
from pacs.receive import Receiver
from pacs.scp import start
from tests.pacs.factories import ct_series


@pytest.fixture
def scp(redis_conn: redis.Redis, settings: Settings) -> Iterator[tuple[int, SeriesIntake]]:
    intake = SeriesIntake(redis_conn, settings)
    server: ThreadedAssociationServer = start(settings, Receiver(intake), port=0)
    yield server.server_address[1], intake
    server.shutdown()


def associate(port: int, calling: str) -> object:
    scu = AE(ae_title=calling)
    scu.add_requested_context(CTImageStorage)
    scu.add_requested_context(Verification)
    return scu.associate("127.0.0.1", port, ae_title="LRPSEG")


def test_c_store_series_becomes_a_finished_job(
    scp: tuple[int, SeriesIntake], client: TestClient, work: Callable[[], bool], redis_conn: redis.Redis
) -> None:
    port, intake = scp
    datasets = ct_series(4, seed=10)
    assoc = associate(port, "ORTHANC")
    assert assoc.is_established  # type: ignore[attr-defined]
    assert assoc.send_c_echo().Status == 0x0000  # type: ignore[attr-defined]
    statuses = [assoc.send_c_store(ds).Status for ds in [*datasets, datasets[0]]]  # type: ignore[attr-defined]
    broken = ct_series(1, seed=11)[0]
    del broken.SeriesInstanceUID
    statuses.append(assoc.send_c_store(broken).Status)  # type: ignore[attr-defined]
    assoc.release()  # type: ignore[attr-defined]
    assert statuses == [0x0000] * 5 + [0xA900]  # the repeat is stored already; the broken one refused
    series_uid = datasets[0].SeriesInstanceUID
    status = intake.status("anonymous", series_uid)
    assert status is not None and status.instances == 4 and status.model == "tiny-unet3d@1"
    commit = client.post(f"/dicomweb/series/{series_uid}/commit")
    assert commit.status_code == 202, commit.text
    assert work()
    view = client.get(f"/v1/jobs/{commit.json()['job_id']}").json()
    assert view["status"] == "finished" and view["result"]["input"]["depth"] == 4


def test_unknown_calling_ae_is_rejected(scp: tuple[int, SeriesIntake], redis_conn: redis.Redis) -> None:
    port, _ = scp
    assoc = associate(port, "STRANGER")
    assert assoc.is_rejected  # type: ignore[attr-defined]
    assert redis_conn.keys("lrpseg-test:intake*") == []


def test_scp_refuses_to_start_without_allowed_aes(redis_conn: redis.Redis, settings: Settings) -> None:
    empty = settings.model_copy(update={"dimse_allowed_aes": []})
    with pytest.raises(ValueError, match="LRPSEG_DIMSE_ALLOWED_AES"):
        start(empty, Receiver(SeriesIntake(redis_conn, empty)), port=0)
