"""CPU time the driver spends per model request, measured against a zero-latency fake server.

The fake server (`tests/fakeserver.py`, answering like `bench/llm_path.py`'s analyst: three
lessons) runs in a child process, so only the client's work is counted: `LiteLLMClient.complete`
with an analyst-sized prompt (about 12,000 characters) and `AnalystReport` as the output, at a
set concurrency. Printed: the process CPU time per request of each round and the smallest (on a
shared machine the smallest is the least disturbed), and litellm's import time.

Usage: `python bench/request_cpu.py [--requests 300] [--rounds 4] [--concurrency 32]`.
Set `EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER=False` to measure the `openai` SDK client path.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
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


async def measure(port: int, requests: int, rounds: int, concurrency: int) -> list[float]:
    from trace2skill.analyse import AnalystReport
    from trace2skill.config import LLMConfig
    from trace2skill.llm import allow_model_requests
    from trace2skill.llm.litellm_backend import LiteLLMClient

    client = LiteLLMClient(LLMConfig(model="openai/fake-model", api_base=f"http://127.0.0.1:{port}/v1"), allow_model_requests,
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
    return cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
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
        from trace2skill.llm.litellm_backend import _litellm

        started = time.process_time()
        _litellm()
        imported = time.process_time() - started
        cpu = asyncio.run(measure(port, args.requests, args.rounds, args.concurrency))
    finally:
        server.terminate()
    print(f"{args.requests} requests x {args.rounds} rounds at concurrency {args.concurrency}: CPU per request "
          f"{min(cpu):.2f} ms (smallest; rounds {', '.join(f'{c:.2f}' for c in cpu)}); litellm import {imported:.2f} s CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
