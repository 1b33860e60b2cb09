"""Transport benchmark: CPU per tracking GET, libcurl (the sink's transport) against urllib3.

Starts `woopra-stub --latency-ms 0` as a child (so that its CPU is not counted) and sends
`--requests` (3,000) tracking GETs, after `--warm-up` (300), through each client in turn,
`--rounds` (3) times, alternating, so that both see the same load on the shared machine:

- curl: `transforms.delivery.http_transport.CurlTransport`, the sink's transport;
- urllib3: the `urllib3.PoolManager` the sink used before it (no retries, no redirects, no
  body decoding, connect and read timeouts), for comparison only.

`--threads` (1) threads share each client, each sending its share in turn. Printed per round:
CPU time of this process per request (user + system, every thread; `time.process_time`),
wall time per request, and the load average. The script never asserts. Run from the
repository root:

    .venv/bin/python bench/bench_transport.py [--requests N] [--rounds N] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_sink import start_stub, stop_stub
from transforms.core.records import WoopraRequest
from transforms.delivery.http_transport import CurlTransport

TIMEOUT_SECONDS = 10.0


def tracking_url(base: str, n: int) -> str:
    params = {
        "project": "bench.example",
        "cookie": f"device-{n % 100}",
        "event": "Order Completed",
        "timestamp": 1_700_000_000_000 + n,
        "ce_seq": n,
        "cv_email": f"user{n % 100}@example.com",
        "ce_revenue": 19.99,
    }
    return WoopraRequest(f"m{n}", base + "/track/ce", params).url()


def curl_sender() -> tuple[Callable[[str], int], Callable[[], None]]:
    transport = CurlTransport(TIMEOUT_SECONDS)
    return (lambda url: transport.exchange("GET", url).status), transport.close


def urllib3_sender() -> tuple[Callable[[str], int], Callable[[], None]]:
    pool = urllib3.PoolManager(
        num_pools=4,
        maxsize=32,
        retries=False,
        timeout=urllib3.Timeout(connect=TIMEOUT_SECONDS, read=TIMEOUT_SECONDS),
    )

    def send(url: str) -> int:
        return pool.request("GET", url, redirect=False, decode_content=False).status

    return send, pool.clear


SENDERS = {"curl": curl_sender, "urllib3": urllib3_sender}


def measure(name: str, urls: list[str], warm_up: list[str], threads: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per request for one client sending `urls` after `warm_up`."""
    send, close = SENDERS[name]()

    def run(batch: list[str]) -> None:
        for url in batch:
            if send(url) != 200:
                raise RuntimeError(f"{name}: a request was not answered 200")

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(run, [warm_up[i::threads] for i in range(threads)]))
        cpu, wall = time.process_time(), time.perf_counter()
        list(pool.map(run, [urls[i::threads] for i in range(threads)]))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    close()
    return cpu / len(urls) * 1e6, wall / len(urls) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3_000)
    parser.add_argument("--warm-up", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-transport-") as work:
        stub = start_stub(Path(work), "transport", ["--latency-ms", "0"])
        try:
            urls = [tracking_url(stub.url, n) for n in range(args.requests)]
            warm_up = [tracking_url(stub.url, -n) for n in range(1, args.warm_up + 1)]
            print(f"{args.requests} tracking GETs per client and round, {args.threads} thread(s)")
            results: dict[str, list[float]] = {name: [] for name in SENDERS}
            for round_number in range(1, args.rounds + 1):
                for name in ("urllib3", "curl"):
                    cpu, wall = measure(name, urls, warm_up, args.threads)
                    results[name].append(cpu)
                    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
                    print(
                        f"  round {round_number} {name:>7}: CPU {cpu:6.0f} µs/request, "
                        f"wall {wall:6.0f} µs/request, load {load}"
                    )
        finally:
            stop_stub(stub.process)
    for name, cpus in results.items():
        print(f"{name:>7}: CPU per request {min(cpus):.0f}-{max(cpus):.0f} µs")
    ratio = min(results["curl"]) / min(results["urllib3"])
    print(f"curl / urllib3 (fastest rounds): {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
