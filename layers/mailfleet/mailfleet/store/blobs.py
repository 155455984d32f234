"""The drivers' BlobStore over S3: appliance backups and logs go in, update packages come
out. Every object is written with its SHA-256 checksum, so S3 itself refuses bytes that
changed on the way."""

from __future__ import annotations

import base64
import hashlib

from mailfleet import aws


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
