"""Per-job data keys and AES-GCM sealing of what a job stores (uploads, artifacts).

Every job gets its own random 256-bit key, kept in its own Redis key (`{p}:dek:{id}`), apart from
the ciphertexts. DELETE and expiry destroy the key, so the sealed blobs that an append-only
file or snapshot may still hold can no longer be read (crypto-shredding; docs/security.md says
where the key lives and what that protects against). Each blob is sealed with a fresh 96-bit
nonce and the job id and field name as associated data, so a blob moved to another job or field
does not open.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = b"lrpseal1"  # leading bytes of every sealed value
NONCE_BYTES = 12


class SealError(ValueError):
    """A sealed value that does not open (wrong key, another job's blob, tampered)."""


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def seal(key: bytes, data: bytes, job_id: str, field: str) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return VERSION + nonce + AESGCM(key).encrypt(nonce, data, f"{job_id}/{field}".encode())


def unseal(key: bytes, sealed: bytes, job_id: str, field: str) -> bytes:
    if not sealed.startswith(VERSION):
        raise SealError(f"{field} of job {job_id} is not sealed")
    nonce = sealed[len(VERSION) : len(VERSION) + NONCE_BYTES]
    try:
        return AESGCM(key).decrypt(nonce, sealed[len(VERSION) + NONCE_BYTES :], f"{job_id}/{field}".encode())
    except InvalidTag:
        raise SealError(f"{field} of job {job_id} does not open with its key") from None
