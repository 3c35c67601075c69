"""A second real STOW-RS client, dicomweb-client (as docs/pacs.md shows it), against lrpseg over HTTP:
its parsed response names every stored instance; a partly refused request names the failure."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from requests.exceptions import HTTPError

from core.security import hash_key
from core.settings import Settings
from lrpseg.registry import Registry
from service.app import create_app
from tests.pacs.factories import ct_series
from tests.service.live import start_server

dicomweb_client = pytest.importorskip("dicomweb_client")
KEY = "pacs-bridge-secret-0123456789"


@pytest.fixture
def lrpseg_url(redis_conn: redis.Redis, registry: Registry, settings: Settings) -> Iterator[str]:
    keyed = settings.model_copy(update={"api_keys": f"bridge:{hash_key(KEY)}"})
    url, stop = start_server(create_app(keyed, registry=registry, connection=redis_conn))
    yield url
    stop()


def test_dicomweb_client_stores_a_series(lrpseg_url: str) -> None:
    client = dicomweb_client.DICOMwebClient(f"{lrpseg_url}/dicomweb", headers={"X-API-Key": KEY})
    datasets = ct_series(3, seed=50)
    answer = client.store_instances(datasets)
    stored = [item.ReferencedSOPInstanceUID for item in answer.ReferencedSOPSequence]
    assert stored == [ds.SOPInstanceUID for ds in datasets]
    mr = ct_series(1, seed=51)[0]
    mr.Modality = "MR"  # no route for MR and no ?model=: refused, the CT part stored
    try:
        answer = client.store_instances([ct_series(1, seed=52)[0], mr])
    except HTTPError as exc:  # some versions raise on 202
        pytest.fail(f"partial success raised: {exc}")
    assert len(answer.ReferencedSOPSequence) == 1
    assert answer.FailedSOPSequence[0].FailureReason == 0x0110
    assert answer.FailedSOPSequence[0].ReferencedSOPInstanceUID == mr.SOPInstanceUID
    wrong = dicomweb_client.DICOMwebClient(f"{lrpseg_url}/dicomweb", headers={"X-API-Key": "nope"})
    with pytest.raises(HTTPError) as caught:
        wrong.store_instances(datasets)
    assert caught.value.response.status_code == 401
