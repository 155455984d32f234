"""Backups stream into S3 (issue 9, finding 7): in parts as they arrive, the sha256
computed on the way, never the whole archive in memory; a bad one is not kept."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest

from mailfleet import aws
from mailfleet.config import ApplianceSettings
from mailfleet.store import blobs


def chunks(total: int, size: int = 64 << 10) -> Any:
    block = os.urandom(size)
    sent = 0
    while sent < total:
        piece = block[: min(size, total - sent)]
        sent += len(piece)
        yield piece


def test_a_large_backup_goes_up_in_parts_with_its_sha256(local_api: Any) -> None:
    local_api.ensure_deployed()
    store = blobs.S3BlobStore(ApplianceSettings().backups_bucket)
    total = blobs.PART_SIZE * 3 + 12345
    digest = hashlib.sha256()
    held = 0  # moto runs in this process too, so count what the upload holds itself
    upload = store.upload("appliances/stream-test/backup.tar", "application/x-tar")
    for piece in chunks(total):
        digest.update(piece)
        upload.write(piece)
        held = max(held, len(upload._buffer))
    uri = upload.finish()
    assert upload.size == total and upload.digest.hexdigest() == digest.hexdigest()
    # Never more than one part waits in memory, whatever the archive's size.
    assert held < blobs.PART_SIZE, f"{held} bytes held"
    bucket, key = blobs.parse_uri(uri)
    head = aws.client("s3").head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == total
    assert head["ETag"].strip('"').endswith("-4"), head["ETag"]  # four parts
    body = aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == digest.hexdigest()


def test_an_aborted_upload_keeps_nothing(local_api: Any) -> None:
    local_api.ensure_deployed()
    bucket = ApplianceSettings().backups_bucket
    store = blobs.S3BlobStore(bucket)
    upload = store.upload("appliances/stream-test/bad.tar", "application/x-tar")
    for piece in chunks(blobs.PART_SIZE + 1000):
        upload.write(piece)
    upload.abort()
    s3 = aws.client("s3")
    with pytest.raises(s3.exceptions.ClientError):
        s3.head_object(Bucket=bucket, Key="appliances/stream-test/bad.tar")
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
