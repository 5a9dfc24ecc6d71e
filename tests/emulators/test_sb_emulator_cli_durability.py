"""The ``emulator servicebus`` command as a subprocess: first line, status endpoint, SIGTERM, and --data-dir
durability across a clean stop and a SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusSubQueue

pytestmark = pytest.mark.timeout(90)
CLI = [sys.executable, "-c", "from worker.cli import main; main()"]


class Emulator:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*CLI, "emulator", "servicebus", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.connection_string = self.proc.stdout.readline().strip()
        assert self.connection_string.startswith("Endpoint=sb://127.0.0.1:"), self.proc.stderr.read()
        second = self.proc.stdout.readline().strip()
        self.status_url = second.split(" ", 1)[1] if second.startswith("status: ") else None

    def status(self) -> dict:
        with urllib.request.urlopen(self.status_url, timeout=5) as resp:
            return json.load(resp)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(15)
        finally:
            self.proc.stdout.close()
            self.proc.stderr.close()


def client(conn: str) -> ServiceBusClient:
    return ServiceBusClient.from_connection_string(conn, retry_total=1)


def receive(receiver, count: int, wait: float = 5.0):
    out = []
    deadline = time.monotonic() + wait
    while len(out) < count and time.monotonic() < deadline:
        out += receiver.receive_messages(max_message_count=count - len(out),
                                         max_wait_time=max(0.2, deadline - time.monotonic()))
    return out


def test_cli_requires_entities():
    proc = subprocess.run([*CLI, "emulator", "servicebus", "--port", "0"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "--queue" in proc.stderr


def test_cli_rejects_bad_config_file_with_the_field(tmp_path: Path):
    bad = tmp_path / "Config.json"
    bad.write_text(json.dumps({"UserConfig": {"Namespaces": [{"Queues": [
        {"Name": "q", "Properties": {"MaxDeliveryCount": "ten"}}]}]}}))
    proc = subprocess.run([*CLI, "emulator", "servicebus", "--port", "0",
                           "--config", str(bad)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "UserConfig.Namespaces[0].Queues[0].Properties.MaxDeliveryCount" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL])
def test_data_dir_keeps_accepted_messages_across_restart(tmp_path: Path, stop_signal: int):
    config = tmp_path / "Config.json"
    config.write_text(json.dumps({"UserConfig": {"Namespaces": [{"Name": "sbemulatorns", "Queues": [
        {"Name": "jobs", "Properties": {"LockDuration": "PT30S", "MaxDeliveryCount": 5}}]}]}}))
    args = ["--config", str(config), "--data-dir", str(tmp_path / "data"), "--status-port", "0"]
    first = Emulator(*args)
    try:
        with client(first.connection_string) as c:
            with c.get_queue_sender("jobs") as s:
                s.send_messages([ServiceBusMessage(f"j{i}", message_id=f"j{i}") for i in range(6)])
            with c.get_queue_receiver("jobs") as r:
                got = receive(r, 3)
                r.complete_message(got[0])
                r.dead_letter_message(got[1], reason="Bad", error_description="field x")
                r.abandon_message(got[2])
                # j3..j5 stay active; a fourth is received and left locked when the emulator goes away
                (_locked,) = receive(r, 1)
                counts = first.status()["entities"]["jobs"]
                assert counts["locked"] == 1 and counts["dead_letter"] == 1 and counts["completed"] == 1
                code = first.stop(stop_signal)
    finally:
        if first.proc.poll() is None:
            first.stop(signal.SIGKILL)
    assert code == (0 if stop_signal == signal.SIGTERM else -9)

    second = Emulator(*args)
    try:
        counts = second.status()["entities"]["jobs"]
        assert counts["active"] == 4 and counts["dead_letter"] == 1 and counts["locked"] == 0
        with client(second.connection_string) as c:
            with c.get_queue_sender("jobs") as s:
                s.send_messages(ServiceBusMessage("after", message_id="after"))
            with c.get_queue_receiver("jobs") as r:
                got = receive(r, 5)
                by_id = {m.message_id: m for m in got}
                assert set(by_id) == {"j2", "j3", "j4", "j5", "after"}
                assert by_id["j2"].delivery_count == 1
                assert by_id["after"].sequence_number == 7       # sequence numbers are not reused
                for m in got:
                    r.complete_message(m)
            with c.get_queue_receiver("jobs", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as d:
                (m,) = receive(d, 1)
                assert (m.message_id, m.dead_letter_reason, m.dead_letter_error_description) == \
                    ("j1", "Bad", "field x")
                d.complete_message(m)
    finally:
        assert second.stop() == 0


def test_status_endpoint_paths(sb_emulator):
    from gcw_emulators.servicebus import QueueConfig

    emu = sb_emulator(queues=[QueueConfig("q")], status_port=0)
    with urllib.request.urlopen(emu.status_url + "status", timeout=5) as resp:
        body = json.load(resp)
    assert body["entities"]["q"]["active"] == 0
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(emu.status_url + "nope", timeout=5)
    assert err.value.code == 404
    assert os.environ.get("GCW_NEVER_SET") is None


def test_duplicate_detection_history_survives_restart(sb_emulator, tmp_path: Path):
    from gcw_emulators.servicebus import QueueConfig

    queues = [QueueConfig("replies", requires_duplicate_detection=True, duplicate_detection_window=600)]
    first = sb_emulator(queues=queues, data_dir=tmp_path)
    with client(first.connection_string) as c, c.get_queue_sender("replies") as s:
        s.send_messages(ServiceBusMessage("result", message_id="req-1"))
    first.stop()
    second = sb_emulator(queues=queues, data_dir=tmp_path)
    with client(second.connection_string) as c, c.get_queue_sender("replies") as s:
        s.send_messages([ServiceBusMessage("result again", message_id="req-1"),
                         ServiceBusMessage("other", message_id="req-2")])
    counts = second.stats()["entities"]["replies"]
    assert counts["active"] == 2 and counts["sent"] == 1


def test_every_command_flag_is_documented():
    from pathlib import Path

    from gcw_emulators.servicebus.cli import servicebus_command

    doc = (Path(__file__).resolve().parents[2] / "docs" / "emulator-servicebus.md").read_text()
    for param in servicebus_command.params:
        assert f"{param.opts[0]} " in doc or f"`{param.opts[0]}`" in doc, f"{param.opts[0]} missing from the doc"
