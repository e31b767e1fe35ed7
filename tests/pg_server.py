"""A throwaway PostgreSQL server for the tests: Debian's server binaries, run as the unprivileged
``postgres`` user when the tests run as root (the server refuses root), in a temporary directory,
listening on a loopback port. One per test session (per xdist worker); a database per test."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


def server_binaries() -> Path | None:
    """The newest installed PostgreSQL server's bin directory, or None."""
    found = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").is_file()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return found[-1] if found else None


def _as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    """A running server; ``database()`` makes a fresh database and gives its URL."""

    bin: Path
    dir: Path
    port: int
    _names: itertools.count[int] = field(default_factory=itertools.count)

    def url(self, database: str) -> str:
        """The URL of one of its databases."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new, empty database; its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}".encode())
        return self.url(name)

    def kill(self) -> None:
        """Stop it at once, as a crash would (its files stay: ``start`` brings it back)."""
        subprocess.run(
            _as_server_user([str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop"]),
            capture_output=True, check=False, timeout=60,
        )  # fmt: skip

    def start(self) -> bool:
        """Start it on its port; whether it started."""
        # Durability is of no use to a test's database: no fsync, no waiting for the disk.
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        started = subprocess.run(
            _as_server_user([str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-l", str(self.dir / "log"),
                             "-w", "-o", options, "start"]),
            capture_output=True, check=False, timeout=120,
        )  # fmt: skip
        return started.returncode == 0

    def stop(self) -> None:
        """Stop it and remove its files."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_server(bin_dir: Path) -> PgServer:
    """Initialise and start a server in a new temporary directory the server's user can write."""
    # Under /tmp (1777), not pytest's tmp_path, whose parents only root may enter.
    work = Path(tempfile.mkdtemp(prefix="pipeline-pg-"))
    work.chmod(0o777)
    try:
        subprocess.run(
            _as_server_user([str(bin_dir / "initdb"), "-A", "trust", "-U", "postgres", "--no-sync",
                             "-D", str(work / "data")]),
            capture_output=True, check=True, timeout=120,
        )  # fmt: skip
        for _ in range(3):  # another process may take the free port first
            server = PgServer(bin_dir, work, _free_port())
            if server.start():
                return server
        log = (work / "log").read_text(errors="replace")[-2000:] if (work / "log").exists() else ""
        raise RuntimeError(f"the PostgreSQL server did not start: {log}")
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
