"""The drivers' BlobStore over S3: appliance backups and logs go in, update packages come
out. Every object is written with its SHA-256 checksum, so S3 itself refuses bytes that
changed on the way. Downloads stream in (`upload`): one part in memory at a time, so a
backup of any size fits the function's memory."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from mailfleet import aws

PART_SIZE = 8 << 20  # S3 wants parts of 5 MiB at least (but the last)


class S3BlobStore:
    def __init__(self, bucket: str, prefix: str = "") -> None:
        self.bucket = bucket
        self.prefix = prefix

    def put(self, name: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        key = self.prefix + name
        digest = hashlib.sha256(data).digest()
        aws.client("s3").put_object(
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType=content_type,
            ChecksumSHA256=base64.b64encode(digest).decode(),
            Metadata={"sha256": digest.hex()},
        )
        return f"s3://{self.bucket}/{key}"

    def upload(self, name: str, content_type: str = "application/octet-stream",
               sha256: str | None = None) -> S3Upload:
        """Stream an object in; `sha256` (hex), when known beforehand, is kept as metadata."""
        return S3Upload(self.bucket, self.prefix + name, content_type, sha256)

    def get(self, uri: str) -> bytes:
        bucket, key = parse_uri(uri)
        if bucket != self.bucket:
            # The functions may read this bucket only; say so rather than AccessDenied.
            raise ValueError(f"blobs are read from s3://{self.bucket}/ only")
        return aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def parse_uri(uri: str) -> tuple[str, str]:
    scheme, _, rest = uri.partition("://")
    bucket, _, key = rest.partition("/")
    if scheme != "s3" or not bucket or not key:
        raise ValueError("expected s3://bucket/key")
    return bucket, key


class S3Upload:
    """Parts of PART_SIZE as they come (multipart once past one part; a small object is
    one PutObject), each with its own SHA-256 checksum for S3 to verify; the whole
    object's SHA-256 is computed on the way (`digest`)."""

    def __init__(self, bucket: str, key: str, content_type: str, sha256: str | None) -> None:
        self.bucket, self.key, self.content_type = bucket, key, content_type
        self.metadata = {"sha256": sha256} if sha256 else {}
        self.digest = hashlib.sha256()
        self.size = 0
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    def write(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        self.size += len(chunk)
        self._buffer.extend(chunk)
        while len(self._buffer) >= PART_SIZE:
            part = bytes(self._buffer[:PART_SIZE])
            del self._buffer[:PART_SIZE]
            self._send_part(part)

    def _send_part(self, data: bytes) -> None:
        s3 = aws.client("s3")
        if self._upload_id is None:
            self._upload_id = s3.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, ContentType=self.content_type,
                ChecksumAlgorithm="SHA256", Metadata=self.metadata)["UploadId"]
        number = len(self._parts) + 1
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
        answer = s3.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id,
                                PartNumber=number, Body=data, ChecksumSHA256=checksum)
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"],
                            "ChecksumSHA256": checksum})

    def finish(self) -> str:
        s3 = aws.client("s3")
        if self._upload_id is None:  # it all fitted in one part: one PutObject
            data = bytes(self._buffer)
            s3.put_object(Bucket=self.bucket, Key=self.key, Body=data,
                          ContentType=self.content_type, Metadata=self.metadata,
                          ChecksumSHA256=base64.b64encode(hashlib.sha256(data).digest()).decode())
        else:
            if self._buffer:
                self._send_part(bytes(self._buffer))
            s3.complete_multipart_upload(Bucket=self.bucket, Key=self.key,
                                         UploadId=self._upload_id,
                                         MultipartUpload={"Parts": self._parts})
        self._buffer.clear()
        return f"s3://{self.bucket}/{self.key}"

    def abort(self) -> None:
        """Nothing is kept (the bucket's lifecycle rule also clears forgotten parts)."""
        self._buffer.clear()
        if self._upload_id is not None:
            aws.client("s3").abort_multipart_upload(Bucket=self.bucket, Key=self.key,
                                                    UploadId=self._upload_id)
            self._upload_id = None
