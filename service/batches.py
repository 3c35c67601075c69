"""Batches: many images in one request, each an ordinary job, read back together.

A batch is a small record over its jobs; the jobs are queued, run, expire and answer exactly
like single submissions (`service.submission`), so a batch result is a single result.

Images come as several multipart `images` parts or one `archive` zip. Ground truths ride
along by name: `NAME.gt.EXT` is the ground truth of the image `NAME.OTHER_EXT` (the same
folder in a zip). A zip is never extracted to disk; its directory is checked before any
member is read (member count, declared sizes, names, symlinks, encryption) and every read is
bounded by the declared size, so a zip bomb costs no more than the limits allow.

Layout (prefix `lrpseg` by default):
  {p}:batch:{id}        hash  owner, created, expires, state (live|deleted), items (json),
                              callback_url, delivery_id, self_url, archive_url
  {p}:batch:{id}:ended  hash  job id -> finished|failed|deleted, written by the jobs' end hooks
                              and by DELETE of a job that had not run (only for batches with a
                              callback: they decide when it fires)
"""

from __future__ import annotations

import io
import json
import posixpath
import stat
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

from fastapi import UploadFile
from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer

from core.batch_records import Batches, BatchRecord, batch_state_of_ended
from core.deliveries import Deliveries
from core.settings import Settings
from core.store import Inputs, Store, Upload
from schemas.batches import BatchItem, BatchLinks, BatchState, BatchView, ItemLinks, ItemState
from schemas.jobs import JobState
from schemas.problems import FieldError
from schemas.results import JobResult
from service import views
from service.deps import Principal
from service.errors import ApiError
from service.submission import Item, read_upload

GT_MARK = ".gt"
JUNK_PREFIXES = ("__MACOSX/",)  # what zip tools add next to the files
ENDED_ITEMS = {ItemState.finished, ItemState.failed, ItemState.canceled, ItemState.deleted, ItemState.expired}
STORED_SUFFIXES = (".png", ".dcm")  # already compressed: stored, not deflated, in the archive


def _limit(detail: str, field: str) -> ApiError:
    return ApiError(
        413, "Batch too large", detail, code="batch-too-large", errors=[FieldError(field=field, message=detail)]
    )


def _invalid(detail: str, field: str, status: int = 422) -> ApiError:
    return ApiError(
        status, "Invalid batch", detail, code="invalid-batch", errors=[FieldError(field=field, message=detail)]
    )


# ---- reading the request --------------------------------------------------------------------


def read_parts(parts: list[UploadFile], settings: Settings) -> list[Item]:
    files = []
    for index, part in enumerate(parts):
        upload = read_upload(part, f"images[{index}]", settings.max_upload_bytes)
        assert upload is not None
        name = upload.filename or f"image-{index}"
        files.append((name, Upload(upload.data, name, upload.content_type)))
    return pair(files, settings, "images")


def read_archive(part: UploadFile, settings: Settings) -> list[Item]:
    upload = read_upload(part, "archive", settings.max_upload_bytes)
    assert upload is not None
    try:
        archive = zipfile.ZipFile(io.BytesIO(upload.data))
    except (zipfile.BadZipFile, ValueError) as exc:
        raise _invalid(f"archive: not a readable zip file ({exc})", "archive", 400) from None
    with archive:
        members = [info for info in archive.infolist() if not _skipped(info)]
        if len(members) > settings.max_archive_members:
            raise _limit(f"archive: {len(members)} entries; the limit is {settings.max_archive_members}", "archive")
        declared = 0
        for info in members:
            check_member(info, settings)
            declared += info.file_size
        if declared > settings.max_archive_bytes:
            raise _limit(
                f"archive: {declared} bytes uncompressed; the limit is {settings.max_archive_bytes}", "archive"
            )
        files = [(info.filename, Upload(read_member(archive, info), info.filename, None)) for info in members]
    return pair(files, settings, "archive")


def _skipped(info: zipfile.ZipInfo) -> bool:
    """Folders and the tools' side files (macOS resource forks, .DS_Store and other dot files)."""
    name = info.filename
    return info.is_dir() or name.startswith(JUNK_PREFIXES) or posixpath.basename(name).startswith(".")


def check_member(info: zipfile.ZipInfo, settings: Settings) -> None:
    """A member we will read: a plain, unencrypted file under a relative, clean name."""
    name = info.filename
    field = f"archive:{name}"
    mode = info.external_attr >> 16
    if info.create_system == 3 and mode and stat.S_ISLNK(mode):  # made on Unix as a symlink
        raise _invalid(f"archive: {name!r} is a symbolic link", field)
    if info.flag_bits & 0x1:
        raise _invalid(f"archive: {name!r} is encrypted", field)
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or ":" in parts[0] or any(p in ("", ".", "..") for p in parts):
        raise _invalid(f"archive: {name!r} is not a plain relative path", field)
    if info.file_size > settings.max_upload_bytes:
        raise _limit(f"archive: {name!r} is {info.file_size} bytes; the limit is {settings.max_upload_bytes}", field)
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _invalid(f"archive: {name!r} uses an unsupported compression (only stored and deflate)", field, 415)


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """The member's bytes, never more than it declares (zipfile also checks size and CRC)."""
    try:
        with archive.open(info) as member:
            data = member.read(info.file_size + 1)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
        raise _invalid(f"archive: {info.filename!r} cannot be read ({exc})", f"archive:{info.filename}", 400) from None
    if len(data) != info.file_size:
        raise _invalid(f"archive: {info.filename!r} is not the size it declares", f"archive:{info.filename}", 400)
    return data


def stem_of(name: str) -> tuple[str, bool]:
    """('folder/NAME', is ground truth) for 'folder/NAME.EXT' or 'folder/NAME.gt.EXT'."""
    base, _ = posixpath.splitext(name)
    if base.lower().endswith(GT_MARK):
        return base[: -len(GT_MARK)], True
    return base, False


def pair(files: list[tuple[str, Upload]], settings: Settings, field: str) -> list[Item]:
    """Images in order (zip entries sorted by name), each with the ground truth named after it."""
    if field == "archive":
        files = sorted(files, key=lambda f: f[0])
    images: list[tuple[str, Upload]] = []
    truths: dict[str, tuple[str, Upload]] = {}
    for name, upload in files:
        stem, is_truth = stem_of(name)
        if is_truth:
            if stem in truths:
                raise _invalid(f"{field}: two ground truths for {stem!r}", field)
            truths[stem] = (name, upload)
        else:
            images.append((name, upload))
    if not images:
        raise _invalid(f"{field}: no images", field)
    if len(images) > settings.max_batch_images:
        raise _limit(f"{field}: {len(images)} images; the limit is {settings.max_batch_images}", field)
    stems: dict[str, str] = {}
    for name, _ in images:
        stem = stem_of(name)[0]
        if stem in truths and stem in stems:
            raise _invalid(f"{field}: {stems[stem]!r} and {name!r} both match ground truth {truths[stem][0]!r}", field)
        stems[stem] = name
    for stem, (name, _) in truths.items():
        if stem not in stems:
            raise _invalid(f"{field}: ground truth {name!r} has no image named {stem}.*", field)
    items = []
    for name, upload in images:
        truth = truths.get(stem_of(name)[0])
        items.append(Item(name, Inputs(upload, truth[1] if truth else None)))
    return items


def fetch_batch(batches: Batches, batch_id: str, principal: Principal) -> BatchRecord:
    """The batch, or 404 (unknown / someone else's) / 410 (deleted or expired)."""
    if not views.JOB_ID.fullmatch(batch_id):
        raise ApiError(404, "Not found", f"no batch {batch_id}", code="batch-not-found")
    record = batches.get(batch_id)
    if record is None or record.owner != principal.id:
        raise ApiError(404, "Not found", f"no batch {batch_id}", code="batch-not-found")
    if record.state == "deleted":
        raise ApiError(410, "Gone", f"batch {batch_id} was deleted", code="batch-gone")
    if time.time() >= record.expires:
        raise ApiError(410, "Gone", f"batch {batch_id} has expired", code="batch-gone")
    return record


# ---- reading it back ------------------------------------------------------------------------------


@dataclass
class BatchJobs:
    """The batch's items with their RQ jobs (None: expired or deleted)."""

    record: BatchRecord
    items: list[BatchItem]
    jobs: list[Job | None]


def load(record: BatchRecord, connection: Redis, store: Store, job_url: Callable[[str], str]) -> BatchJobs:
    ids = [item["job_id"] for item in record.items]
    jobs = Job.fetch_many(ids, connection=connection, serializer=JSONSerializer)
    items = []
    for item, job in zip(record.items, jobs, strict=True):
        error = None
        if store.is_deleted(item["job_id"]):
            status, job = ItemState.deleted, None
        elif job is None:
            status = ItemState.expired
        else:
            status = ItemState(views.state_of(job).value)
            if status is ItemState.failed:
                error = views.error_of(job, job.meta or {}).model_dump()
        items.append(
            BatchItem(
                index=item["index"],
                name=item["name"],
                ground_truth=item.get("ground_truth"),
                job_id=item["job_id"],
                status=status,
                error=error,
                links=ItemLinks(self=job_url(item["job_id"])),
            )
        )
    jobs = [
        None if it.status in (ItemState.deleted, ItemState.expired) else j for it, j in zip(items, jobs, strict=True)
    ]
    return BatchJobs(record, items, jobs)


def batch_view(loaded: BatchJobs, deliveries: Deliveries, max_attempts: int) -> BatchView:
    record, items = loaded.record, loaded.items
    counts: dict[str, int] = {}
    for item in items:
        assert item.status is not None
        counts[item.status.value] = counts.get(item.status.value, 0) + 1
    if all(item.status in ENDED_ITEMS for item in items):
        status = batch_state_of_ended(counts.get("finished", 0), len(items))
    elif all(item.status is ItemState.queued for item in items):
        status = BatchState.queued
    else:
        status = BatchState.started
    callback = None
    if record.callback_url and record.delivery_id:
        callback = deliveries.status(record.delivery_id, record.callback_url, max_attempts)
    return BatchView(
        batch_id=record.batch_id,
        status=status,
        total=len(items),
        counts=counts,
        created_at=datetime.fromtimestamp(record.created, tz=UTC),
        expires_at=datetime.fromtimestamp(record.expires, tz=UTC),
        items=items,
        callback=callback,
        links=BatchLinks(self=record.self_url, archive=record.archive_url),
    )


def ended(view: BatchView) -> bool:
    return view.status not in (BatchState.queued, BatchState.started)


def folder_of(item: BatchItem) -> str:
    """The item's folder in the archive: index (sorts like the request) and a safe file stem."""
    stem = posixpath.splitext(posixpath.basename(item.name))[0]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem).strip(".") or "image"
    return f"{item.index:04d}-{safe[:80]}"


def write_archive(loaded: BatchJobs, view: BatchView, store: Store, artifact_url: views.ArtifactUrlFor) -> IO[bytes]:
    """A zip of the ended batch: batch.json (this view), and per item its folder with
    result.json and every artifact (finished), or error.json (failed, expired, deleted)."""
    out = tempfile.SpooledTemporaryFile(max_size=32 * 1024 * 1024)  # noqa: SIM115 - handed to the response
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        archive.writestr("batch.json", view.model_dump_json(indent=2))
        for item, job in zip(view.items, loaded.jobs, strict=True):
            folder = folder_of(item)
            result = job.return_value() if job is not None and item.status is ItemState.finished else None
            if not isinstance(result, dict):
                error = item.error or {"code": item.status.value if item.status else "unknown", "detail": ""}
                archive.writestr(f"{folder}/error.json", json.dumps(error, indent=2))
                continue
            # exactly the `result` of GET /v1/jobs/{id}
            result = JobResult.model_validate(views.with_urls(result, item.job_id, artifact_url)).model_dump(
                mode="json"
            )
            archive.writestr(f"{folder}/result.json", json.dumps(result, indent=2))
            for name in store.artifact_names(item.job_id):
                data = store.get_artifact(item.job_id, name)
                if data is None:
                    continue
                kind = zipfile.ZIP_STORED if name.endswith(STORED_SUFFIXES) else zipfile.ZIP_DEFLATED
                archive.writestr(f"{folder}/{name}", data, compress_type=kind)
    out.seek(0)
    return out


def chunks(file: IO[bytes], size: int = 1024 * 1024) -> Iterator[bytes]:
    try:
        while block := file.read(size):
            yield block
    finally:
        file.close()


def delete_batch(record: BatchRecord, batches: Batches, store: Store, connection: Redis) -> None:
    """Delete the batch and all its jobs (inputs, artifacts, results); running ones stop at their next stage."""
    batches.mark_deleted(record.batch_id)
    if record.delivery_id:
        Deliveries(connection, store.prefix).delete(record.delivery_id)
    ids = [item["job_id"] for item in record.items]
    for job_id, job in zip(ids, Job.fetch_many(ids, connection=connection, serializer=JSONSerializer), strict=True):
        store.mark_deleted(job_id)
        if job is not None and views.state_of(job) is not JobState.started:
            job.delete()
