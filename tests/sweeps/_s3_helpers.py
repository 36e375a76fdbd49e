"""A real S3 API server for storage tests (moto's ``moto_server``, a dev dependency): the
MinIO stand-in the ``s3_endpoint`` fixture starts, and URIs naming it as MinIO is named."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

S3_KEYS = "testing:testing-secret@"  # moto takes any; in the URI, so Ray's workers have them


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """``127.0.0.1:PORT`` of a fresh S3 API server with a bucket ``sweeps``."""
    port = free_port()
    server = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.2)
        import pyarrow.fs

        fs, _ = pyarrow.fs.FileSystem.from_uri(
            f"s3://{S3_KEYS}sweeps?endpoint_override=127.0.0.1:{port}&scheme=http"
            "&allow_bucket_creation=true"
        )
        fs.create_dir("sweeps")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def s3_root(endpoint: str, prefix: str = "lrsweep") -> str:
    """A storage URI on that server, its endpoint in the query."""
    return f"s3://{S3_KEYS}sweeps/{prefix}?endpoint_override={endpoint}&scheme=http"
