"""CPU time the driver spends per model request, measured against a zero-latency fake server.

The fake server (`tests/fakeserver.py`, answering like `bench/llm_path.py`'s analyst: three
lessons) runs in a child process, so only the client's work is counted: `complete` with an
analyst-sized prompt (about 12,000 characters) and `AnalystReport` as the output, at a set
concurrency, for each client: `http` (`http_backend.HTTPClient`, what an `openai/` model with an
`api_base` uses) and `litellm` (`LiteLLMClient`). Printed per client: the process CPU time per
request of each round and the smallest (on a shared machine the smallest is the least
disturbed), and the client's import time (a fresh process each).

Usage: `python bench/request_cpu.py [--requests 300] [--rounds 4] [--concurrency 32] [--clients http,litellm]`.
Set `EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER=True` to measure litellm's own HTTP handler.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))


def serve(port: int) -> None:
    from fakeserver import FakeServer
    from llm_path import answer

    with FakeServer(reply=answer, port=port):
        while True:
            time.sleep(3600)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def measure(port: int, requests: int, rounds: int, concurrency: int, kind: str) -> list[float]:
    from trace2skill.analyse import AnalystReport
    from trace2skill.config import LLMConfig
    from trace2skill.llm import allow_model_requests, close_clients
    from trace2skill.llm.http_backend import HTTPClient
    from trace2skill.llm.litellm_backend import LiteLLMClient

    backend = HTTPClient if kind == "http" else LiteLLMClient
    client = backend(LLMConfig(model="openai/fake-model", api_base=f"http://127.0.0.1:{port}/v1"), allow_model_requests,
                     api_key="sk-bench")
    slots = asyncio.Semaphore(concurrency)
    body = "step output " * 1000

    async def one(n: int) -> None:
        messages = [{"role": "system", "content": "You analyse agent trajectories."},
                    {"role": "user", "content": f"[trace] run-{n} | failure\n<trajectory>\n{body}\n</trajectory>"}]
        async with slots:
            await client.complete(messages, output=AnalystReport, purpose="analyse-failure")

    await asyncio.gather(*(one(n) for n in range(2 * concurrency)))  # connections opened, caches warm
    cpu = []
    for _ in range(rounds):
        started = time.process_time()
        await asyncio.gather(*(one(n) for n in range(requests)))
        cpu.append((time.process_time() - started) / requests * 1000)
    await close_clients()
    return cpu


def one_client(port: int, kind: str, args: argparse.Namespace) -> None:
    """One client measured in this (fresh) process: its import, then its requests."""
    started = time.process_time()
    if kind == "litellm":
        from trace2skill.llm.litellm_backend import _litellm

        _litellm()
    else:
        import aiohttp  # noqa: F401
    imported = time.process_time() - started
    cpu = asyncio.run(measure(port, args.requests, args.rounds, args.concurrency, kind))
    print(f"{kind}: {args.requests} requests x {args.rounds} rounds at concurrency {args.concurrency}: CPU per request "
          f"{min(cpu):.2f} ms (smallest; rounds {', '.join(f'{c:.2f}' for c in cpu)}); import {imported:.2f} s CPU", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--clients", default="http,litellm", help="clients to measure, comma-separated")
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        one_client(args.port, args.only, args)
        return 0
    port = free_port()
    server = multiprocessing.Process(target=serve, args=(port,), daemon=True)
    server.start()
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        for kind in args.clients.split(","):
            subprocess.run([sys.executable, __file__, "--only", kind, "--port", str(port), "--requests", str(args.requests),
                            "--rounds", str(args.rounds), "--concurrency", str(args.concurrency)], check=True)
    finally:
        server.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
