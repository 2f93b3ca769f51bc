"""mosquitto_pub / mosquitto_sub (Debian's mosquitto-clients) against the brokers under test."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from conftest import TIMEOUT, run_tool

VERSIONS = pytest.mark.parametrize("version", ["mqttv31", "mqttv311", "mqttv5"])


def start_sub(broker, *args: str) -> subprocess.Popen:
    """Starts mosquitto_sub and waits until it is subscribed (-d prints 'received SUBACK'; stdbuf makes its
    stdout line-buffered so that line arrives at once)."""
    proc = subprocess.Popen(
        ["stdbuf", "-oL", "mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-d", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + TIMEOUT
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "received SUBACK" in line:
            return proc
    proc.kill()
    raise AssertionError(f"mosquitto_sub did not subscribe: {''.join(lines)}")


def finish(proc: subprocess.Popen, timeout: float = TIMEOUT) -> list[str]:
    """Waits for a mosquitto_sub bounded by -C/-W and returns its message lines (debug lines removed)."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"mosquitto_sub did not finish: {out}") from None
    return [line for line in out.splitlines() if line and not line.startswith("Client ")
            and not line.startswith("Subscribed") and not line.startswith("Timed out")]


def pub(broker, version: str, *args: str) -> None:
    r = run_tool(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-V", version, *args])
    assert r.returncode == 0, r.stderr.decode(errors="replace")


@VERSIONS
@pytest.mark.parametrize("qos", ["0", "1", "2"])
def test_cli_pub_sub_qos(broker, uid, version, qos):
    sub = start_sub(broker, "-V", version, "-t", f"{uid}/#", "-q", "2", "-C", "3", "-W", "8", "-F", "%t %q %p")
    for i in range(3):
        pub(broker, version, "-t", f"{uid}/{i}", "-q", qos, "-m", f"msg{i}")
    assert finish(sub) == [f"{uid}/{i} {qos} msg{i}" for i in range(3)]


@VERSIONS
def test_cli_retained(broker, uid, version):
    pub(broker, version, "-t", f"{uid}/r", "-q", "1", "-r", "-m", "kept")
    r = run_tool(["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-V", version,
                  "-t", f"{uid}/r", "-C", "1", "-W", "5", "-F", "%r %p"])
    assert r.returncode == 0, r
    assert r.stdout.decode().splitlines() == ["1 kept"]
    # --retained-only stops at the first non-retained message; an empty retained payload deletes it.
    pub(broker, version, "-t", f"{uid}/r", "-q", "1", "-r", "-n")
    r = run_tool(["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-V", version,
                  "-t", f"{uid}/r", "-C", "1", "-W", "1"])
    assert r.stdout == b""
    assert r.returncode == 27, f"mosquitto_sub timed out without a message (exit 27), got {r.returncode}"


@VERSIONS
def test_cli_will_on_killed_client(broker, uid, version):
    watcher = start_sub(broker, "-V", version, "-t", f"{uid}/will", "-q", "1", "-C", "1", "-W", "8", "-F", "%t %p")
    dying = start_sub(broker, "-V", version, "-t", f"{uid}/nothing", "-i", f"{uid}-dying",
                      "--will-topic", f"{uid}/will", "--will-payload", "dead", "--will-qos", "1")
    os.kill(dying.pid, signal.SIGKILL)  # the kernel closes the socket: no DISCONNECT
    dying.wait(timeout=5)
    dying.stdout.close()
    assert finish(watcher) == [f"{uid}/will dead"]


def test_cli_v5_properties(broker, uid):
    sub = start_sub(broker, "-V", "mqttv5", "-t", f"{uid}/p", "-C", "1", "-W", "8", "-F", "%C|%R|%P|%p")
    pub(broker, "mqttv5", "-t", f"{uid}/p", "-q", "1", "-m", "body",
        "-D", "publish", "content-type", "text/plain",
        "-D", "publish", "response-topic", f"{uid}/answer",
        "-D", "publish", "user-property", "key", "value")
    assert finish(sub) == [f"text/plain|{uid}/answer|key:value|body"]


def test_cli_shared_subscription(broker, uid):
    a = start_sub(broker, "-V", "mqttv5", "-t", f"$share/grp/{uid}/s", "-q", "1", "-W", "3", "-F", "%p")
    b = start_sub(broker, "-V", "mqttv5", "-t", f"$share/grp/{uid}/s", "-q", "1", "-W", "3", "-F", "%p")
    n = 10
    # One mosquitto_pub sending a message per stdin line (-l), well inside the subscribers' -W window.
    r = subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-V", "mqttv5",
                        "-t", f"{uid}/s", "-q", "1", "-l"],
                       input="".join(f"{i}\n" for i in range(n)).encode(), capture_output=True, timeout=10)
    assert r.returncode == 0, r.stderr
    got = finish(a, 8) + finish(b, 8)
    assert sorted(int(x) for x in got) == list(range(n))
