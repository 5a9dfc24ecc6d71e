"""Throughput of the Service Bus emulator with one azure-servicebus SDK client.

The emulator runs as a separate process (as in the worker's benchmarks), so the client and the broker do not
share a GIL. Prints messages/s for: batched sends, single sends, and receive + complete (PEEK_LOCK), for each
round and the median over the rounds (the box is shared: look at the median).

    .venv/bin/python benchmarks/servicebus_emulator.py [--messages 5000] [--batch 100] [--receive-batch 100]
        [--prefetch N] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time

from azure.servicebus import ServiceBusClient, ServiceBusMessage
from gcw_emulators.cluster import start_servicebus_process


def start_emulator() -> tuple[subprocess.Popen[str], str]:
    return start_servicebus_process(["bench", "single"], lock_duration=60)


def one_round(client: ServiceBusClient, args: argparse.Namespace, body: bytes) -> tuple[float, float, float]:
    with client.get_queue_sender("bench") as sender:
        sender.send_messages(ServiceBusMessage(body))  # warm up the link
        start = time.perf_counter()
        sent = 0
        while sent < args.messages:
            n = min(args.batch, args.messages - sent)
            sender.send_messages([ServiceBusMessage(body, message_id=f"m{sent + i}") for i in range(n)])
            sent += n
        send_rate = args.messages / (time.perf_counter() - start)
    with client.get_queue_sender("single") as sender:
        start = time.perf_counter()
        for i in range(args.single):
            sender.send_messages(ServiceBusMessage(body, message_id=f"s{i}"))
        single_rate = args.single / (time.perf_counter() - start)
    total = args.messages + 1
    prefetch = args.receive_batch if args.prefetch is None else args.prefetch
    with client.get_queue_receiver("bench", prefetch_count=prefetch) as receiver:
        start = time.perf_counter()
        done = 0
        while done < total:
            got = receiver.receive_messages(max_message_count=min(args.receive_batch, total - done), max_wait_time=5)
            if not got:
                break
            for m in got:
                receiver.complete_message(m)
            done += len(got)
        receive_rate = done / (time.perf_counter() - start)
    if done != total:
        print(f"WARNING: received {done} of {total}")
    return send_rate, single_rate, receive_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=100, help="messages per send_messages(list) call")
    parser.add_argument("--single", type=int, default=500, help="messages sent one per call")
    parser.add_argument("--receive-batch", type=int, default=100, help="max_message_count per receive")
    parser.add_argument("--prefetch", type=int, default=None, help="prefetch_count (default: --receive-batch)")
    parser.add_argument("--body-size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    proc, conn = start_emulator()
    body = b"x" * args.body_size
    prefetch = args.receive_batch if args.prefetch is None else args.prefetch
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; {args.body_size}-byte bodies")
    rounds = []
    try:
        with ServiceBusClient.from_connection_string(conn) as client:
            for i in range(args.rounds):
                rates = one_round(client, args, body)
                rounds.append(rates)
                print(
                    f"round {i + 1}: send(batch {args.batch}) {rates[0]:,.0f}/s  send(single) {rates[1]:,.0f}/s  "
                    f"receive+complete(max {args.receive_batch}, prefetch {prefetch}) {rates[2]:,.0f}/s"
                )
    finally:
        proc.terminate()
        proc.wait(10)
    med = [statistics.median(r[i] for r in rounds) for i in range(3)]
    print(
        f"median: send(batch {args.batch}) {med[0]:,.0f} msg/s  send(single) {med[1]:,.0f} msg/s  "
        f"receive+complete {med[2]:,.0f} msg/s"
    )


if __name__ == "__main__":
    main()
