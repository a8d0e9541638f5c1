"""Real servers for the scale-out tests, started on loopback by the tests themselves:

- PostgreSQL from Debian's package (`apt-get install postgresql`; .ci/run installs it): initdb into a temporary
  folder, started with pg_ctl on a free port, as the `postgres` user when the tests run as root.
- An S3-compatible server: moto's ThreadedMotoServer (the `moto[server]` dev dependency).

A test that needs a server the machine lacks is skipped, with the command that installs it.
"""
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    return versions[-1].parent if versions else None


@pytest.fixture(scope="session")
def postgres_url():
    """postgresql+psycopg2://flywheel@127.0.0.1:PORT : a throwaway server with databases `dagster` and `mlflow`.

    The driver is named: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which dagster-postgres does
    not support."""
    pytest.importorskip("psycopg2", reason="psycopg2-binary is a dev dependency: pip install -e '.[dev]'")
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not found: apt-get install -y postgresql (.ci/run does)")
    root = Path(tempfile.mkdtemp(prefix="flywheel-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:   # initdb refuses to run as root
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no `postgres` user to run the server as (apt-get install postgresql makes one)")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()

    def run(*cmd):
        return subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True, timeout=120)

    run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "flywheel", "--no-sync", "-E", "UTF8")
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60", "start", "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off")
    try:
        import psycopg2

        conn = psycopg2.connect(f"postgresql://flywheel@127.0.0.1:{port}/postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            for db in ("dagster", "mlflow"):
                cur.execute(f"CREATE DATABASE {db}")
        conn.close()
        yield f"postgresql+psycopg2://flywheel@127.0.0.1:{port}"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server():
    """(endpoint, storage_options) of a moto S3 server on loopback with an empty bucket `flywheel`."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is a dev dependency: pip install -e '.[dev]'")
    import boto3

    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(50):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "aws_region": "us-east-1"}
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket="flywheel")
    try:
        yield endpoint, {**keys, "aws_endpoint": endpoint, "allow_http": "true"}
    finally:
        server.stop()
