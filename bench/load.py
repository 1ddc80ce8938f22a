"""Gateway load benchmark on loopback: status polls per second and upload latency.

    .venv/bin/python bench/load.py --json load.json            # Redis mode (production)
    .venv/bin/python bench/load.py --mode embedded --json load.json

Starts ``--gateway-workers`` gateway processes (default: one per CPU, at most 4; each
``uvicorn`` with the app of ``avatars serve``: JSON logs with an access line per request,
API keys required, the rate limit raised out of the way) on 127.0.0.1, each on its own
port, and in Redis mode a private ``redis-server``; no worker runs, so uploaded jobs stay
queued and nothing else competes for the CPU. Then, from this process:

1. baseline: ``GET /healthz`` (no key, no store) as fast as ``--concurrency``
   keep-alive connections allow, for ``--seconds``, against ONE gateway process;
2. ``GET /v1/jobs/{id}`` with an API key, the same way (ONE process): requests/s,
   p50/p99 latency;
3. ``--rounds`` rounds of ``--uploads`` concurrent ``POST /v1/avatars`` of one
   ~``--upload-mb`` MB JPEG (a 12-megapixel photo): p50/p95/max time to the 202, first
   against ONE process (``upload_single_process_*``), then spread round-robin over all
   the gateway processes as a load balancer would (``upload_*``; the same run when
   there is one). CPU per upload is summed over the gateway processes.

The client is a small HTTP/1.1 keep-alive client on asyncio streams (a request costs it
a few tens of microseconds), so the gateway, not the client, is what is measured. Every
loop is bounded by a count and a deadline. Prints a table and writes ``--json``:
``status_rps``, ``status_p99_ms`` (one process), ``upload_p95_ms`` (with
``upload_gateway_processes``), ``upload_single_process_p95_ms`` and the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

HOST = "127.0.0.1"
#: Gateway processes for the upload runs by default: one per CPU, at most 4.
DEFAULT_GATEWAY_WORKERS = max(1, min(4, os.cpu_count() or 1))


# ----------------------------------------------------------------------- helpers
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds a process has used (Linux /proc; zeros elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used."""
    return sum(cpu_times(pid))


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


def photo_jpeg(megabytes: float, seed: int = 0) -> bytes:
    """A 12-megapixel JPEG of about ``megabytes`` MB (smooth content plus sensor-like noise)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = 4000, 3000
    base = rng.integers(0, 255, (height // 16, width // 16, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(base).resize((width, height), Image.BICUBIC), np.int16)
    best = b""
    for noise, quality in ((12, 85), (16, 88), (20, 90), (8, 80), (5, 75)):
        noisy = np.clip(image + rng.integers(-noise, noise + 1, image.shape), 0, 255)
        buf = io.BytesIO()
        Image.fromarray(noisy.astype(np.uint8)).save(buf, format="JPEG", quality=quality)
        data = buf.getvalue()
        if abs(len(data) - megabytes * 1e6) < abs(len(best) - megabytes * 1e6):
            best = data
        if abs(len(data) - megabytes * 1e6) < 0.15 * megabytes * 1e6:
            break
    return best


# --------------------------------------------------------------- HTTP/1.1 client
class Connection:
    """One keep-alive HTTP/1.1 connection: request bytes in, (status, body) out."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                body += await self.reader.readexactly(size + 2)
                if size == 0:
                    return status, body
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


def get_request(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def upload_request(photo: bytes, headers: dict[str, str]) -> bytes:
    boundary = "benchboundary7MA4YWxkTrZu0gW"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="photos"; filename="photo.jpg"\r\n'
        f"Content-Type: image/jpeg\r\n\r\n"
    ).encode() + photo + f"\r\n--{boundary}--\r\n".encode()
    lines = [
        "POST /v1/avatars HTTP/1.1",
        f"Host: {HOST}",
        f"Content-Type: multipart/form-data; boundary={boundary}",
        f"Content-Length: {len(body)}",
    ] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def hammer(port: int, raw: bytes, concurrency: int, seconds: float, warmup_s: float,
                 max_requests: int) -> dict[str, Any]:
    """``concurrency`` connections send ``raw`` back to back; latencies after the warm-up."""
    connections = [await Connection.open(port) for _ in range(concurrency)]
    latencies: list[float] = []
    errors = 0
    statuses: dict[int, int] = {}
    start = time.perf_counter()
    measure_from = start + warmup_s
    stop_at = measure_from + seconds
    sent = 0

    async def loop(conn: Connection) -> None:
        nonlocal errors, sent
        while sent < max_requests:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            sent += 1
            status, _ = await conn.request(raw)
            t1 = time.perf_counter()
            if t0 >= measure_from:
                latencies.append(t1 - t0)
                statuses[status] = statuses.get(status, 0) + 1
                if status != 200:
                    errors += 1

    await asyncio.wait_for(
        asyncio.gather(*(loop(c) for c in connections)), timeout=warmup_s + seconds + 30
    )
    elapsed = min(time.perf_counter(), stop_at) - measure_from
    for conn in connections:
        await conn.close()
    return {
        "requests": len(latencies),
        "errors": errors,
        "statuses": statuses,
        "rps": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies) * 1000,
    }


async def upload_rounds(ports: list[int], raw: bytes, uploads: int, rounds: int) -> dict[str, Any]:
    """``rounds`` x ``uploads`` concurrent uploads, each on its own fresh connection; the
    i-th upload of a round goes to ``ports[i % len(ports)]`` (round-robin)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    per_round = []

    async def one(port: int) -> None:
        conn = await Connection.open(port)
        try:
            t0 = time.perf_counter()
            status, body = await conn.request(raw)
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
            if status != 202:
                print(f"upload answered {status}: {body[:200]!r}", file=sys.stderr)
        finally:
            await conn.close()

    for _ in range(rounds):
        first = len(latencies)
        await asyncio.wait_for(
            asyncio.gather(*(one(ports[i % len(ports)]) for i in range(uploads))), timeout=120
        )
        per_round.append(percentile(latencies[first:], 95) * 1000)
        await asyncio.sleep(0.5)
    return {
        "uploads": len(latencies),
        "statuses": statuses,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p95_ms": percentile(latencies, 95) * 1000,
        "max_ms": max(latencies) * 1000,
        "p95_ms_per_round": [round(x, 1) for x in per_round],
    }


# ------------------------------------------------------------------------ gateway
def run_gateway(port: int) -> None:
    """The gateway process: ``avatars serve``'s app and logging, without a worker."""
    import uvicorn

    from service.app import create_app
    from workers.observability import configure_logging
    from workers.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_format)
    uvicorn.run(create_app(settings), host=HOST, port=port, access_log=False, log_config=None)


class Services:
    """redis-server (Redis mode) and the gateway process, stopped on exit."""

    def __init__(self, mode: str, work: Path, gateways: int = 1) -> None:
        self.mode = mode
        self.work = work
        self.procs: list[subprocess.Popen] = []
        self.gateway_procs: list[subprocess.Popen] = []
        self.ports = [free_port() for _ in range(gateways)]
        self.port = self.ports[0]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AVATARS_")}
        self.env.update(
            AVATARS_DATA_DIR=str(work / "data"),
            AVATARS_ALLOW_ANONYMOUS="false",
            AVATARS_RATE_LIMIT_PER_S="1000000",
            AVATARS_RATE_LIMIT_BURST="1000000",
            AVATARS_MAX_UPLOAD_MB="50",
            AVATARS_MAX_CONCURRENT_DECODES="2",
            PYTHONPATH=str(REPO),
        )

    def start(self) -> None:
        if self.mode == "redis":
            binary = shutil.which("redis-server")
            if binary is None:
                raise SystemExit("redis-server is not installed (or use --mode embedded)")
            redis_port = free_port()
            self.procs.append(subprocess.Popen(
                [binary, "--port", str(redis_port), "--bind", HOST, "--save", "",
                 "--appendonly", "no", "--dir", str(self.work)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
            self.env["AVATARS_REDIS_URL"] = f"redis://{HOST}:{redis_port}/0"
            import redis

            client = redis.Redis(host=HOST, port=redis_port, socket_connect_timeout=0.5)

            def pong() -> bool:
                try:
                    return bool(client.ping())
                except redis.ConnectionError:
                    return False

            wait_for(pong, 15, "redis-server")
            client.close()
        self.log = open(self.work / "gateway.log", "wb")  # noqa: SIM115 - closed in stop()
        # Gateway 0 serves the status runs alone; uploads go round-robin to all of them,
        # as a load balancer in front of several gateway processes would send them.
        for port in self.ports:
            proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--gateway", str(port)],
                env=self.env, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT,
            )
            self.procs.append(proc)
            self.gateway_procs.append(proc)
        for port, proc in zip(self.ports, self.gateway_procs):

            def up(port: int = port, proc: subprocess.Popen = proc) -> bool:
                if proc.poll() is not None:
                    raise RuntimeError((self.work / "gateway.log").read_text(errors="replace"))
                try:
                    with socket.create_connection((HOST, port), timeout=0.5):
                        return True
                except OSError:
                    return False

            wait_for(up, 60, "the gateway")
        self.gateway_pids = [proc.pid for proc in self.gateway_procs]
        self.gateway_pid = self.gateway_pids[0]

    def create_key(self) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "service.cli", "keys", "create", "--tenant", "bench"],
            env=self.env, cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
        )
        return out.stdout.strip()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        if getattr(self, "log", None) is not None:
            self.log.close()


def cpu_times_all(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds used by all of ``pids`` together."""
    times = [cpu_times(pid) for pid in pids]
    return sum(t[0] for t in times), sum(t[1] for t in times)


async def measure_uploads(
    args: argparse.Namespace, ports: list[int], pids: list[int], raw: bytes
) -> dict[str, Any]:
    """Upload rounds against ``ports``; latency figures and the gateways' CPU per upload."""
    user0, system0 = cpu_times_all(pids)
    client0 = time.process_time()
    uploads = await upload_rounds(ports, raw, args.uploads, args.rounds)
    client1 = time.process_time()
    user1, system1 = cpu_times_all(pids)
    n = uploads["uploads"]
    return {
        **uploads,
        "client_cpu_ms_per_upload": round(1000 * (client1 - client0) / n, 1),
        "cpu_ms_per_upload": round(1000 * (user1 - user0 + system1 - system0) / n, 1),
        "user_ms_per_upload": round(1000 * (user1 - user0) / n, 1),
        "system_ms_per_upload": round(1000 * (system1 - system0) / n, 1),
    }


def upload_figures(prefix: str, cpu_prefix: str, run: dict[str, Any]) -> dict[str, Any]:
    """The JSON keys of one set of upload rounds (``measure_uploads``)."""
    return {
        f"{prefix}_statuses": run["statuses"],
        f"{prefix}_p50_ms": round(run["p50_ms"], 1),
        f"{prefix}_p95_ms": round(run["p95_ms"], 1),
        f"{prefix}_max_ms": round(run["max_ms"], 1),
        f"{prefix}_p95_ms_per_round": run["p95_ms_per_round"],
        f"{cpu_prefix}_cpu_ms_per_upload": run["cpu_ms_per_upload"],
        f"{cpu_prefix}_user_ms_per_upload": run["user_ms_per_upload"],
        f"{cpu_prefix}_system_ms_per_upload": run["system_ms_per_upload"],
    }


async def measure(args: argparse.Namespace, services: Services, key: str) -> dict[str, Any]:
    port = services.port
    auth = {"Authorization": f"Bearer {key}"}
    photo = photo_jpeg(args.upload_mb)
    upload_raw = upload_request(photo, auth)
    # one upload per gateway warms its upload path; the first makes the job that is polled
    job_id = None
    for gateway_port in services.ports:
        conn = await Connection.open(gateway_port)
        status, body = await conn.request(upload_raw)
        await conn.close()
        if status != 202:
            raise RuntimeError(f"upload failed: {status} {body[:300]!r}")
        job_id = job_id or json.loads(body)["job_id"]

    pid = services.gateway_pid

    async def timed(coro):
        cpu0 = cpu_seconds(pid)
        result = await coro
        return result, cpu_seconds(pid) - cpu0

    # status polls and the baseline: ONE gateway process (the others are idle)
    health, health_cpu = await timed(hammer(
        port, get_request("/healthz", {}), args.concurrency, args.seconds, args.warmup,
        args.max_requests))
    status_run, status_cpu = await timed(hammer(
        port, get_request(f"/v1/jobs/{job_id}", auth), args.concurrency, args.seconds,
        args.warmup, args.max_requests))
    # uploads: first on the one process alone, then spread over all of them
    single = await measure_uploads(args, [port], [pid], upload_raw)
    if len(services.ports) > 1:
        await asyncio.sleep(0.5)
        uploads = await measure_uploads(args, services.ports, services.gateway_pids, upload_raw)
    else:
        uploads = single

    def per_request_ms(cpu: float, run: dict, key: str) -> float:
        # the warm-up's requests used CPU too: count them at the measured rate
        total = run[key] + run.get("rps", 0) * args.warmup
        return round(1000 * cpu / total, 3) if total else 0.0

    return {
        "mode": args.mode,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "status_gateway_processes": 1,
        "status_rps": round(status_run["rps"], 1),
        "status_p50_ms": round(status_run["p50_ms"], 2),
        "status_p99_ms": round(status_run["p99_ms"], 2),
        "status_max_ms": round(status_run["max_ms"], 2),
        "status_requests": status_run["requests"],
        "status_errors": status_run["errors"],
        "status_gateway_cpu_ms_per_request": per_request_ms(status_cpu, status_run, "requests"),
        "baseline_healthz_rps": round(health["rps"], 1),
        "baseline_healthz_gateway_cpu_ms_per_request": per_request_ms(health_cpu, health, "requests"),
        "baseline_healthz_p99_ms": round(health["p99_ms"], 2),
        "upload_bytes": len(photo),
        "upload_concurrency": args.uploads,
        "upload_rounds": args.rounds,
        # uploads spread round-robin over `upload_gateway_processes` gateway processes
        "upload_gateway_processes": len(services.ports),
        "uploads": uploads["uploads"],
        **upload_figures("upload", "upload_gateway", uploads),
        # this process (the client) competes for the same cores
        "upload_client_cpu_ms_per_upload": uploads["client_cpu_ms_per_upload"],
        # the same uploads against ONE gateway process
        **upload_figures("upload_single_process", "upload_single_process", single),
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gateway", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["redis", "embedded"], default="redis")
    parser.add_argument("--concurrency", type=int, default=16, help="keep-alive connections")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--max-requests", type=int, default=200_000, help="cap per run")
    parser.add_argument("--uploads", type=int, default=20, help="concurrent uploads per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of concurrent uploads")
    parser.add_argument("--upload-mb", type=float, default=3.0, help="size of the JPEG")
    parser.add_argument(
        "--gateway-workers", type=int, default=DEFAULT_GATEWAY_WORKERS,
        help="gateway processes the uploads are spread over (round-robin, as a load "
        "balancer would); status polls always hit one process (default: one per CPU, "
        "at most 4, as README 'Scaling out' runs them)",
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    if args.gateway:
        run_gateway(args.gateway)
        return 0

    if args.gateway_workers < 1:
        parser.error("--gateway-workers must be at least 1")
    work = Path(tempfile.mkdtemp(prefix="avatars-load-"))
    services = Services(args.mode, work, args.gateway_workers)
    try:
        services.start()
        key = services.create_key()
        result = asyncio.run(measure(args, services, key))
    finally:
        services.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"gateway load, {args.mode} mode, {args.concurrency} connections, loopback")
    print(f"  GET /healthz (baseline)   {result['baseline_healthz_rps']:8.0f} req/s   "
          f"p99 {result['baseline_healthz_p99_ms']:6.1f} ms")
    print(f"  GET /v1/jobs/{{id}}         {result['status_rps']:8.0f} req/s   "
          f"p99 {result['status_p99_ms']:6.1f} ms   (target >= 1000 req/s, p99 <= 50 ms)")
    print(f"  gateway CPU per request: healthz "
          f"{result['baseline_healthz_gateway_cpu_ms_per_request']:.2f} ms, status "
          f"{result['status_gateway_cpu_ms_per_request']:.2f} ms, upload "
          f"{result['upload_single_process_cpu_ms_per_upload']:.1f} ms "
          f"({result['upload_single_process_user_ms_per_upload']:.1f} user + "
          f"{result['upload_single_process_system_ms_per_upload']:.1f} system: network, "
          "writes, fsync; one process)")
    print(f"  POST /v1/avatars x{args.uploads} of {result['upload_bytes'] / 1e6:.1f} MB, "
          f"1 gateway process   p50 {result['upload_single_process_p50_ms']:.0f} ms   "
          f"p95 {result['upload_single_process_p95_ms']:.0f} ms   "
          f"max {result['upload_single_process_max_ms']:.0f} ms")
    if result["upload_gateway_processes"] > 1:
        print(f"  POST /v1/avatars x{args.uploads} of {result['upload_bytes'] / 1e6:.1f} MB, "
              f"{result['upload_gateway_processes']} gateway processes   "
              f"p50 {result['upload_p50_ms']:.0f} ms   p95 {result['upload_p95_ms']:.0f} ms   "
              f"max {result['upload_max_ms']:.0f} ms   "
              f"gateway CPU {result['upload_gateway_cpu_ms_per_upload']:.1f} ms per upload")
    print(f"  upload target: p95 <= 300 ms (upload_p95_ms: "
          f"{result['upload_gateway_processes']} gateway process(es))")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
