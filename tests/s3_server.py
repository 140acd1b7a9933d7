"""A real S3-compatible server (moto) on 127.0.0.1 for tests: `with s3_bucket(monkeypatch) as uri`."""
import contextlib
import socket
from typing import Iterator

import pytest


@contextlib.contextmanager
def s3_bucket(monkeypatch, bucket: str = "hier") -> Iterator[str]:
    """A moto server with an empty `bucket`, and the storage URI of its `sweeps/` folder (the credentials it
    takes are set in the environment, where Ray's workers inherit them); stopped afterwards."""
    moto_server = pytest.importorskip("moto.server")
    import boto3
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(k, v)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1")
        client.create_bucket(Bucket=bucket)
        yield f"s3://{bucket}/sweeps?region=us-east-1&endpoint_override=127.0.0.1:{port}&scheme=http"
    finally:
        server.stop()
