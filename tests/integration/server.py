"""The local PostgreSQL server as something a test can restart (Debian's ``pg_ctlcluster``): for
the opt-in restart test and the database-fault scenarios of tests/chaos.

Restarting the server breaks every other session using it, so these tests run only when asked
(PYPGFLOW_TEST_RESTART_DB=1, set by ``make chaos``). They need the ``postgresql-common`` tools and
the right to run them (root, or the cluster's owner); the cluster is the one listening on the
test URL's port.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass

import psycopg
import pytest

from tests.conftest import ADMIN_URL

RESTARTS_ALLOWED = os.environ.get("PYPGFLOW_TEST_RESTART_DB") == "1"

#: skips a test unless restarting the shared server was asked for
needs_restart_rights = pytest.mark.skipif(
    not RESTARTS_ALLOWED,
    reason="restarts the shared PostgreSQL server: set PYPGFLOW_TEST_RESTART_DB=1 to run",
)


@dataclass(frozen=True)
class Cluster:
    """One local cluster: ``restart()`` it, fast (clients disconnected, a clean shutdown) or
    immediate (as after a crash: recovery from the write-ahead log on start)."""

    version: str
    name: str

    def restart(self, mode: str = "fast") -> float:
        """Restart the server and wait until it accepts connections: the seconds it took."""
        began = time.monotonic()
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", "-m", mode, self.version, self.name,
             "restart"],
            check=True,
            timeout=120,
            capture_output=True,
        )  # fmt: skip
        wait_accepting(ADMIN_URL, timeout=60)
        return time.monotonic() - began


def local_cluster() -> Cluster:
    """The cluster serving the test database's port (the test is skipped without the tools)."""
    if shutil.which("pg_lsclusters") is None or shutil.which("pg_ctlcluster") is None:
        pytest.skip("needs pg_lsclusters and pg_ctlcluster (postgresql-common)")
    port = str(psycopg.conninfo.conninfo_to_dict(ADMIN_URL).get("port") or 5432)
    listing = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == port:
            return Cluster(fields[0], fields[1])
    pytest.skip(f"no local cluster listens on port {port}:\n{listing}")


def accepting(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


def wait_accepting(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not accepting(url):
        if time.monotonic() > deadline:
            raise AssertionError(f"PostgreSQL did not accept connections within {timeout:g} s")
        time.sleep(0.1)
