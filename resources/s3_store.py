"""S3 media store (any S3 API server) through dagster-aws' S3Resource.

Its own module so that loading the code location in local mode never imports dagster-aws.
"""

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError
from dagster_aws.s3 import S3Resource
from dagster_aws.s3.sensor import get_objects
from pydantic import PrivateAttr

from resources.media_store import MediaStore, StoredObject, StoreUnavailable

_MISSING = {"404", "NoSuchKey", "NotFound"}


@contextmanager
def _answered(doing: str) -> Iterator[None]:
    """A failure left after botocore's own retries (S3Resource: `max_attempts` tries in the standard mode,
    exponential backoff with jitter, on 5xx, throttling and dropped connections) as StoreUnavailable naming
    what was asked; the step's RetryPolicy tries the stage again."""
    try:
        yield
    except (ClientError, BotoCoreError, S3UploadFailedError) as error:
        raise StoreUnavailable(f"{doing}: {error}") from error


class S3MediaStore(MediaStore):
    """S3 (or any S3 API server) through dagster-aws' S3Resource; objects are put whole, so a put that
    fails leaves the key's previous object as it was."""

    s3: S3Resource
    bucket: str
    prefix: str = ""
    cache_dir: str = "/tmp/avatar-media-cache"
    # Every object is encrypted at rest by the store itself, not only by the bucket's default (a backstop
    # someone can switch off): SSE-S3 (AES256), or SSE-KMS with this key (AVATAR_S3_KMS_KEY_ID).
    kms_key_id: str | None = None

    _client: Any = PrivateAttr(default=None)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.s3.get_client()
        return self._client

    def _object(self, key: str) -> str:
        return f"{self.prefix.strip('/')}/{key}" if self.prefix.strip("/") else key

    def _encryption(self) -> dict[str, str]:
        """The server-side encryption arguments of every put."""
        if self.kms_key_id:
            return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id}
        return {"ServerSideEncryption": "AES256"}

    def _write(self, key: str, source: bytes | Path) -> None:
        with _answered(f"writing {self._uri(key)}"):
            if isinstance(source, Path):
                # upload_file may go multipart; S3 shows the object only once it is complete.
                self.client.upload_file(str(source), self.bucket, self._object(key), ExtraArgs=self._encryption())
            else:
                self.client.put_object(Bucket=self.bucket, Key=self._object(key), Body=source, **self._encryption())

    def _create(self, key: str, data: bytes) -> bool:
        with _answered(f"creating {self._uri(key)}"):
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=self._object(key), Body=data, IfNoneMatch="*", **self._encryption()
                )
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in {"PreconditionFailed", "412", "ConditionalRequestConflict"}:
                    return False
                raise
        return True

    def _read(self, key: str) -> bytes:
        """A missing key is FileNotFoundError, as in a local store; any other failure StoreUnavailable."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._object(key))["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _MISSING:
                raise FileNotFoundError(f"{self._uri(key)} is not there") from error
            raise StoreUnavailable(f"reading {self._uri(key)}: {error}") from error
        except BotoCoreError as error:
            raise StoreUnavailable(f"reading {self._uri(key)}: {error}") from error

    def _exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._object(key))
        except self.client.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in _MISSING:
                return False
            raise
        return True

    def _delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._object(key))

    def list_keys(self, prefix: str) -> Iterator[str]:
        strip = len(self._object(""))
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._object(prefix)):
            for item in page.get("Contents", []):
                yield item["Key"][strip:]

    def objects(self, prefix: str, since: datetime | None = None) -> list[StoredObject]:
        strip = len(self._object(""))
        try:
            listed = get_objects(self.bucket, self._object(prefix), since_last_modified=since, client=self.client)
        except (ClientError, BotoCoreError) as error:
            raise StoreUnavailable(f"listing {self._uri(prefix)}: {error}") from error
        return [StoredObject(item["Key"][strip:], item["Size"], item["LastModified"], item.get("ETag", "")) for item in listed]

    def copy_key(self, source: str, target: str) -> None:
        """A server-side copy: a voice sample is not downloaded to be archived."""
        with _answered(f"copying {self._uri(self._key(source))} to {self._uri(self._key(target))}"):
            self.client.copy_object(
                Bucket=self.bucket, Key=self._object(self._key(target)),
                CopySource={"Bucket": self.bucket, "Key": self._object(self._key(source))},
                **self._encryption(),  # a copy is a new object: it does not inherit the source's encryption
            )

    def _uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._object(key)}"

    def _local_path(self, key: str) -> Path:
        target = Path(self.cache_dir) / key
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=target.parent, suffix=".part")
            os.close(fd)
            self.client.download_file(self.bucket, self._object(key), tmp_name)
            os.replace(tmp_name, target)
        return target
