"""A local cluster from Debian's packages: Redis, PostgreSQL, replicas of `assistant serve` and nginx on
loopback ports, for a trial (`make cluster`) and the cluster tests."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from assistant.errors import AssistantError

NGINX_CONF = Path(__file__).parent.parent / "deploy" / "nginx.conf"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
# The addresses deploy/nginx.conf names, replaced by the cluster's own.
_CONF_REPLICAS = ("127.0.0.1:7861", "127.0.0.1:7862")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, process: subprocess.Popen, what: str, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssistantError(f"{what} exited with code {process.returncode}; its log: {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssistantError(f"{what} did not listen on port {port} within {timeout:.0f} s; its log: {log}")


@dataclass
class Engine:
    """One server process that can be stopped and started again on the same port and data (the tests
    stop Redis and PostgreSQL under load)."""

    name: str
    command: list[str]
    port: int
    log: Path
    url: str = ""
    user: str | None = None  # run as this user (PostgreSQL refuses root)
    process: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> Engine:
        command = ["runuser", "-u", self.user, "--", *self.command] if self.user else self.command
        with self.log.open("a") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_port(self.port, self.process, self.name, self.log)
        return self

    def stop(self) -> None:
        """A clean stop (SIGTERM; PostgreSQL's smart shutdown would wait for the pool, so it gets SIGINT)."""
        if self.process is None or self.process.poll() is not None:
            return
        # To the process group: `runuser` passes no signal on to PostgreSQL.
        os.killpg(self.process.pid, signal.SIGINT if self.name == "postgresql" else signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _runtime_dir(name: str) -> Path:
    """A folder other users can reach (nginx's workers and PostgreSQL do not run as root): pytest's and
    most temporary folders are private to their owner."""
    folder = Path(tempfile.mkdtemp(prefix=f"assistant-{name}-"))
    folder.chmod(0o755)
    return folder


@contextmanager
def redis(folder: Path) -> Iterator[Engine]:
    binary = shutil.which("redis-server")
    if not binary:
        raise AssistantError("redis-server is not installed: apt-get install -y redis-server")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    command += ["--dir", str(folder), "--protected-mode", "yes"]
    engine = Engine("redis", command, port, folder / "redis.log", url=f"redis://127.0.0.1:{port}/0")
    try:
        yield engine.start()
    finally:
        engine.stop()


@contextmanager
def postgres(folder: Path | None = None) -> Iterator[Engine]:
    """A new PostgreSQL cluster (its own data folder, user `assistant`, database `assistant`, trust
    authentication on loopback only), run as the `postgres` user when this process is root."""
    if not (PG_BIN / "initdb").exists():
        raise AssistantError("PostgreSQL 15 is not installed: apt-get install -y postgresql")
    runtime = _runtime_dir("pg")
    data = runtime / "data"
    user = "postgres" if os.geteuid() == 0 else None
    if user:
        shutil.chown(runtime, user, user)
    log = (folder or runtime) / "postgresql.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.touch()
    if user:
        shutil.chown(log, user, user)
    prefix = ["runuser", "-u", user, "--"] if user else []
    initdb = [str(PG_BIN / "initdb"), "-D", str(data), "-U", "assistant", "-A", "trust", "-E", "UTF8"]
    initdb += ["--locale=C", "--no-sync", "--no-instructions"]
    done = subprocess.run(prefix + initdb, capture_output=True, text=True)
    if done.returncode:
        raise AssistantError(f"initdb failed: {done.stderr.strip()[-500:]}")
    port = free_port()
    command = [str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port), "-k", str(runtime)]
    command += ["-c", "listen_addresses=127.0.0.1"]
    engine = Engine("postgresql", command, port, log, user=user)
    try:
        engine.start()
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(f"postgresql://assistant@127.0.0.1:{port}/postgres", autocommit=True) as conn:
                    conn.execute("CREATE DATABASE assistant")
                break
            except psycopg.OperationalError:  # still starting up
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        engine.url = f"postgresql://assistant@127.0.0.1:{port}/assistant"
        yield engine
    finally:
        engine.stop()
        shutil.rmtree(runtime, ignore_errors=True)


@contextmanager
def nginx(replicas: list[str], folder: Path | None = None) -> Iterator[Engine]:
    """Debian's nginx running deploy/nginx.conf in front of `replicas` (host:port), on a free port."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise AssistantError("nginx is not installed: apt-get install -y nginx")
    runtime = _runtime_dir("nginx")
    port = free_port()
    site = NGINX_CONF.read_text(encoding="utf-8")
    lines = []
    for line in site.splitlines():
        if line.strip().startswith("server 127.0.0.1:7861"):
            lines += [line.replace(_CONF_REPLICAS[0], r) for r in replicas]
        elif line.strip().startswith("server 127.0.0.1:7862"):
            continue
        else:
            lines.append(line.replace("listen 80;", f"listen 127.0.0.1:{port};"))
    (runtime / "site.conf").write_text("\n".join(lines) + "\n", encoding="utf-8")
    log = (folder or runtime) / "nginx-error.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp = "".join(f"{kind}_temp_path {runtime}/{kind};\n" for kind in kinds)
    (runtime / "nginx.conf").write_text(
        f"""worker_processes 1;
pid {runtime}/nginx.pid;
error_log {log} warn;
events {{ worker_connections 1024; }}
http {{
    access_log {runtime}/access.log;
    {temp}
    include {runtime}/site.conf;
}}
""",
        encoding="utf-8",
    )
    command = [binary, "-p", str(runtime), "-c", str(runtime / "nginx.conf"), "-g", "daemon off;"]
    check = subprocess.run([*command, "-t"], capture_output=True, text=True)
    if check.returncode:
        raise AssistantError(f"nginx refused the configuration: {check.stderr.strip()[-800:]}")
    engine = Engine("nginx", command, port, log, url=f"http://127.0.0.1:{port}")
    try:
        yield engine.start()
    finally:
        engine.stop()
        shutil.rmtree(runtime, ignore_errors=True)


@contextmanager
def _replicas(env: dict, folder: Path, count: int, launch=None) -> Iterator[list]:
    """`count` servers started side by side (each loads the model for ~20 s), stopped on exit; `launch`
    as `bench.served` takes it."""
    from concurrent.futures import ThreadPoolExecutor

    from assistant.bench import served

    stacks = [ExitStack() for _ in range(count)]
    try:
        with ThreadPoolExecutor(count) as pool:
            futures = [
                pool.submit(stack.enter_context, served(env, folder / f"replica-{n}.log", launch=launch))
                for n, stack in enumerate(stacks, 1)
            ]
            running = [f.result() for f in futures]
        yield running
    finally:
        for stack in stacks:
            stack.close()


@dataclass
class Cluster:
    redis: Engine
    postgres: Engine
    nginx: Engine
    replicas: list  # bench.Served
    env: dict
    folder: Path


@contextmanager
def cluster(folder: Path, env: dict | None = None, replicas: int = 2, launch=None) -> Iterator[Cluster]:
    """Redis, PostgreSQL, `replicas` servers sharing them (one secret key, trusting nginx on loopback)
    and nginx in front; everything stopped on exit. `env` adds settings for the replicas."""
    folder.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        r = stack.enter_context(redis(folder / "redis"))
        pg = stack.enter_context(postgres(folder))
        shared = {
            "ASSISTANT_RATE_LIMIT_STORAGE": r.url,
            "ASSISTANT_FEEDBACK_URL": pg.url,
            "ASSISTANT_SECRET_KEY": secrets.token_urlsafe(32),
            "ASSISTANT_TRUSTED_PROXIES": "127.0.0.1",
            **(env or {}),
        }
        running = stack.enter_context(_replicas(shared, folder, replicas, launch))
        web = stack.enter_context(nginx([f"127.0.0.1:{s.port}" for s in running], folder))
        yield Cluster(r, pg, web, running, shared, folder)


def main() -> None:
    """`make cluster`: start everything, print where, stop cleanly on Ctrl-C or SIGTERM."""
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "cluster")
    token = secrets.token_urlsafe(16)
    # Both stop everything (Ctrl-C, `kill`), even when started in the background, where SIGINT is ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print("Starting Redis, PostgreSQL, two replicas and nginx (the replicas take a minute)…", flush=True)
    try:
        with cluster(folder, {"ASSISTANT_METRICS": token}) as c:
            print(
                f"Chat and API:  {c.nginx.url}/   (health: {c.nginx.url}/api/health)\n"
                + "".join(f"Replica {n}:     {s.url}/   and {s.url}/metrics\n" for n, s in enumerate(c.replicas, 1))
                + f"Metrics token: {token}\nRedis:         {c.redis.url}\nPostgreSQL:    {c.postgres.url}\n"
                f"Logs in {folder}/. Ctrl-C stops everything.",
                flush=True,
            )
            while all(s.process.poll() is None for s in c.replicas):
                time.sleep(1)
            print("A replica exited: stopping.", flush=True)
    except KeyboardInterrupt:
        pass
    print("Stopped.", flush=True)


if __name__ == "__main__":
    main()
