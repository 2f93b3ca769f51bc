"""Interop suite: the same tests run against Wasp and against a real Mosquitto 2.

Both brokers are started once per session on free loopback ports. Every test takes the `broker` fixture,
which is parametrized over the brokers under test, so a test id looks like `test_x[wasp-v5]` or
`test_x[mosquitto-v5]` and `pytest -k mosquitto` runs one side only.

Environment:
- WASP_BIN: the wasp binary (default: <repo>/target/debug/wasp). A missing binary is a failure, not a skip.
- MOSQUITTO_BIN: the mosquitto binary (default: `mosquitto` on PATH, else /usr/sbin/mosquitto).
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

REPO = Path(__file__).resolve().parents[2]
BROKERS = ["wasp", "mosquitto"]
START_TIMEOUT = 15.0
# How long to wait for something that must happen, and for something that must not.
TIMEOUT = 5.0
QUIET = 0.75


@dataclass
class Broker:
    name: str
    host: str
    port: int
    # MQTT over WebSocket, path /mqtt, on the same broker.
    ws_port: int
    proc: subprocess.Popen
    log: Path

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(proc: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"broker did not listen on {port} within {START_TIMEOUT}s:\n{log.read_text(errors='replace')}")


def start_wasp(workdir: Path) -> Broker:
    binary = Path(os.environ.get("WASP_BIN", REPO / "target" / "debug" / "wasp"))
    if not binary.is_file():
        raise RuntimeError(f"wasp binary not found at {binary}: build it with `cargo build -p wasp` or set WASP_BIN")
    port, ws_port = free_port(), free_port()
    conf = workdir / "wasp.toml"
    conf.write_text(f'[[listeners]]\nname = "ws"\nbind = "127.0.0.1:{ws_port}"\nprotocol = "ws"\n')
    log = workdir / "wasp.log"
    proc = subprocess.Popen(
        [str(binary), "--config", str(conf), "--listen", f"127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    wait_listening(proc, port, log)
    wait_listening(proc, ws_port, log)
    return Broker("wasp", "127.0.0.1", port, ws_port, proc, log)


def start_mosquitto(workdir: Path) -> Broker:
    binary = os.environ.get("MOSQUITTO_BIN") or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port, ws_port = free_port(), free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        f"listener {ws_port} 127.0.0.1\n"
        "protocol websockets\n"
        "allow_anonymous true\n"
        "persistence false\n"
        "log_dest stdout\n"
        "log_type error\n"
        "log_type warning\n"
    )
    log = workdir / "mosquitto.log"
    proc = subprocess.Popen(
        [binary, "-c", str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    wait_listening(proc, port, log)
    wait_listening(proc, ws_port, log)
    return Broker("mosquitto", "127.0.0.1", port, ws_port, proc, log)


@pytest.fixture(scope="session", params=BROKERS)
def broker(request) -> Broker:
    workdir = Path(tempfile.mkdtemp(prefix=f"interop-{request.param}-"))
    b = start_wasp(workdir) if request.param == "wasp" else start_mosquitto(workdir)
    yield b
    b.proc.send_signal(signal.SIGTERM)
    try:
        b.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        b.proc.kill()
        b.proc.wait(timeout=5)


@pytest.fixture
def uid() -> str:
    """A unique prefix for topics and client ids: brokers live for the whole session."""
    return "it" + uuid.uuid4().hex[:10]


class Client:
    """A paho-mqtt 2.x client driven synchronously: every wait is bounded and event-based."""

    def __init__(self, broker: Broker, client_id: str = "", protocol: int = 5, clean: bool = True,
                 session_expiry: int | None = None, keepalive: int = 30, websocket: bool = False):
        self.broker = broker
        self.port = broker.ws_port if websocket else broker.port
        self.protocol = protocol
        self.clean = clean
        self.session_expiry = session_expiry
        self.keepalive = keepalive
        kwargs = {}
        if protocol != 5:
            kwargs["clean_session"] = clean
        self.c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if protocol == 5 else mqtt.MQTTv311,
            transport="websockets" if websocket else "tcp",
            **kwargs,
        )
        if websocket:
            self.c.ws_set_options(path="/mqtt")
        self.messages: queue.Queue = queue.Queue()
        self.connack: queue.Queue = queue.Queue()
        self.subacks: dict[int, list] = {}
        self.unsubacks: dict[int, object] = {}
        self.disconnects: queue.Queue = queue.Queue()
        self._cv = threading.Condition()
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        self.c.on_disconnect = self._on_disconnect
        self.connected = False

    # callbacks (paho's network thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack.put((flags.session_present, reason_code, properties))

    def _on_message(self, client, userdata, msg):
        self.messages.put(msg)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._cv:
            self.subacks[mid] = reason_codes
            self._cv.notify_all()

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties):
        with self._cv:
            self.unsubacks[mid] = reason_codes
            self._cv.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnects.put(reason_code)

    # actions
    def will(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, properties=None) -> Client:
        self.c.will_set(topic, payload, qos, retain, properties)
        return self

    def connect(self, properties: Properties | None = None, expect_ok: bool = True):
        """Connects and waits for CONNACK; returns (session_present, reason_code, properties)."""
        kwargs = {}
        if self.protocol == 5:
            kwargs["clean_start"] = self.clean
            props = properties or Properties(PacketTypes.CONNECT)
            if self.session_expiry is not None:
                props.SessionExpiryInterval = self.session_expiry
            kwargs["properties"] = props
        self.c.connect(self.broker.host, self.port, keepalive=self.keepalive, **kwargs)
        self.c.loop_start()
        try:
            result = self.connack.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"no CONNACK from {self.broker.name} within {TIMEOUT}s") from None
        if expect_ok:
            assert not result[1].is_failure, f"CONNACK refused: {result[1]}"
        self.connected = True
        return result

    def _wait_for(self, table: dict, mid: int):
        deadline = time.monotonic() + TIMEOUT
        with self._cv:
            while mid not in table:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no acknowledgement for mid {mid} within {TIMEOUT}s")
                self._cv.wait(left)
            return table.pop(mid)

    def subscribe(self, topic: str, qos: int = 0, options=None, properties=None) -> list:
        """Subscribes and waits for SUBACK; returns the list of reason codes."""
        if options is not None:
            rc, mid = self.c.subscribe(topic, options=options, properties=properties)
        else:
            rc, mid = self.c.subscribe(topic, qos, properties=properties)
        assert rc == mqtt.MQTT_ERR_SUCCESS, rc
        return self._wait_for(self.subacks, mid)

    def unsubscribe(self, topic: str):
        rc, mid = self.c.unsubscribe(topic)
        assert rc == mqtt.MQTT_ERR_SUCCESS, rc
        return self._wait_for(self.unsubacks, mid)

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False, properties=None):
        """Publishes and waits until the QoS flow completes (sent for QoS 0, PUBACK / PUBCOMP otherwise)."""
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        info.wait_for_publish(timeout=TIMEOUT)
        assert info.is_published(), f"publish to {topic!r} (QoS {qos}) not completed within {TIMEOUT}s"
        return info

    def expect(self, n: int = 1, timeout: float = TIMEOUT) -> list:
        """Waits for exactly n further messages (more are left in the queue)."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            try:
                out.append(self.messages.get(timeout=max(left, 0.001)))
            except queue.Empty:
                got = [(m.topic, m.payload) for m in out]
                raise AssertionError(f"expected {n} messages, got {len(out)} within {timeout}s: {got}") from None
        return out

    def expect_one(self, timeout: float = TIMEOUT):
        return self.expect(1, timeout)[0]

    def expect_none(self, timeout: float = QUIET) -> None:
        try:
            m = self.messages.get(timeout=timeout)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message on {m.topic!r}: {m.payload!r}")

    def drain(self, timeout: float = QUIET) -> list:
        """Everything that arrives within `timeout` (for sets whose size is asserted by the caller)."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            try:
                out.append(self.messages.get(timeout=left))
            except queue.Empty:
                return out

    def expect_disconnect(self, timeout: float = TIMEOUT):
        try:
            return self.disconnects.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"client was not disconnected within {timeout}s") from None

    def disconnect(self) -> None:
        if self.connected:
            self.c.disconnect()
            self.expect_disconnect()
            self.connected = False
        self.c.loop_stop()

    def drop(self) -> None:
        """Closes the TCP connection without DISCONNECT (an abnormal disconnection for the broker)."""
        self.c.loop_stop()
        sock = self.c.socket()
        assert sock is not None, "client has no socket"
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        self.connected = False


@pytest.fixture
def clients(broker):
    """A factory of connected clients; every client still open at the end is disconnected."""
    made: list[Client] = []

    def make(client_id: str = "", protocol: int = 5, connect: bool = True, **kwargs) -> Client:
        c = Client(broker, client_id=client_id, protocol=protocol, **kwargs)
        made.append(c)
        if connect:
            c.connect()
        return c

    yield make
    for c in made:
        try:
            if c.connected:
                c.c.disconnect()
            c.c.loop_stop()
        except Exception:
            pass


def run_tool(args: list[str], timeout: float = 10.0) -> subprocess.CompletedProcess:
    """Runs mosquitto_pub / mosquitto_sub with a hard timeout."""
    return subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False)


def props(packet_type, **values) -> Properties:
    p = Properties(packet_type)
    for k, v in values.items():
        setattr(p, k, v)
    return p
