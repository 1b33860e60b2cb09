"""Stub benchmark: the CPU `woopra-stub` spends per tracking GET.

In the streaming and sink benchmarks the stub shares the machine's cores with the pipeline it
measures, so what it costs per request is taken from the pipeline. This starts
`woopra-stub --latency-ms 0 --record FILE` as a child, as those benchmarks do, and sends
`--requests` (20,000) tracking GETs after `--warm-up` (500) from `--threads` (16) threads, each
with its own kept-alive connection (the sink's transport), `--rounds` (3) times. Printed per
round: the stub process's CPU per request (utime + stime of all its threads, from /proc),
requests per second, and the load average. The script never asserts. Run from the repository
root, on each checkout to compare:

    .venv/bin/python bench/bench_stub.py [--requests N] [--threads N] [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_sink import _cpu_ticks, start_stub, stop_stub
from bench.bench_transport import TIMEOUT_SECONDS, tracking_url
from transforms.delivery.http_transport import CurlTransport

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class _Senders:
    """One transport per thread, as the sink's lanes have."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[CurlTransport] = []
        self._lock = threading.Lock()

    def send(self, url: str) -> int:
        transport = getattr(self._local, "transport", None)
        if transport is None:
            transport = self._local.transport = CurlTransport(TIMEOUT_SECONDS)
            with self._lock:
                self._all.append(transport)
        return transport.exchange("GET", url).status

    def close(self) -> None:
        for transport in self._all:
            transport.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--warm-up", type=int, default=500)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-stub-") as work:
        stub = start_stub(Path(work), "stub", ["--latency-ms", "0"])
        senders = _Senders()
        cpus: list[float] = []
        try:
            print(f"{args.requests} tracking GETs per round from {args.threads} threads")
            with ThreadPoolExecutor(max_workers=args.threads) as pool:
                warm_up = [tracking_url(stub.url, -n) for n in range(1, args.warm_up + 1)]
                list(pool.map(senders.send, warm_up))
                for round_number in range(1, args.rounds + 1):
                    urls = [tracking_url(stub.url, n) for n in range(args.requests)]
                    ticks, started = _cpu_ticks(stub.process.pid), time.perf_counter()
                    statuses = list(pool.map(senders.send, urls))
                    wall = time.perf_counter() - started
                    cpu = (_cpu_ticks(stub.process.pid) - ticks) / CLOCK_TICKS
                    if statuses.count(200) != len(urls):
                        raise RuntimeError("a request was not answered 200")
                    cpus.append(cpu / len(urls) * 1e6)
                    print(
                        f"  round {round_number}: stub CPU {cpus[-1]:4.0f} µs/request, "
                        f"{len(urls) / wall:5.0f} requests/s, load {os.getloadavg()[0]:.2f}"
                    )
        finally:
            senders.close()
            stop_stub(stub.process)
    print(f"stub CPU per request: {min(cpus):.0f}-{max(cpus):.0f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
