"""A real S3 endpoint on localhost for tests: moto's server mode, reached through `AWS_ENDPOINT_URL` exactly
as pyarrow (and so Ray Tune) reaches a bucket; no internet, dummy credentials.

Import the fixture into a test module: `from s3_server import s3_bucket  # noqa: F401`. It is module-scoped
and sets the AWS variables in os.environ for the module's lifetime, so that a Ray cluster started after it
passes them on to every worker process (a Ray fixture must depend on it to start later).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

BUCKET = "cmda-results"


@pytest.fixture(scope="module")
def s3_bucket() -> Iterator[str]:
    """URI of an empty bucket on a local S3 server (`s3://cmda-results`)."""
    pytest.importorskip("moto", reason="moto[server] is a dev dependency (pip install -e '.[dev]')")
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        try:
            boto3.client("s3").create_bucket(Bucket=BUCKET)
            yield f"s3://{BUCKET}"
        finally:
            server.stop()


def list_objects(uri: str) -> dict[str, int]:
    """Key (relative to `uri`) -> size of every object under an s3:// prefix."""
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(uri)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return {i.path[len(root):].lstrip("/"): i.size for i in infos if i.type == pafs.FileType.File}
