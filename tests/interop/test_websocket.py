"""MQTT over WebSocket (MQTT 3.1.1 section 6, MQTT 5.0 section 6) with paho-mqtt's websocket transport."""

from __future__ import annotations

import pytest

PROTOCOLS = pytest.mark.parametrize("proto", [4, 5], ids=["v311", "v5"])


@PROTOCOLS
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_websocket_round_trip(clients, uid, proto, qos):
    """Publisher and subscriber both on the WebSocket listener."""
    sub = clients(f"{uid}-sub", protocol=proto, websocket=True)
    assert [g.value for g in sub.subscribe(f"{uid}/t", qos)] == [qos]
    pub = clients(f"{uid}-pub", protocol=proto, websocket=True)
    pub.publish(f"{uid}/t", b"over websocket", qos=qos)
    m = sub.expect_one()
    assert (m.topic, m.payload, m.qos) == (f"{uid}/t", b"over websocket", qos)
    sub.expect_none()


@PROTOCOLS
def test_websocket_and_tcp_clients_share_the_broker(clients, uid, proto):
    """A large message from a WebSocket client reaches a TCP subscriber, and the other way round."""
    ws = clients(f"{uid}-ws", protocol=proto, websocket=True)
    tcp = clients(f"{uid}-tcp", protocol=proto)
    ws.subscribe(f"{uid}/to-ws", 1)
    tcp.subscribe(f"{uid}/to-tcp", 1)
    big = bytes(range(256)) * 800  # 200 kB: several WebSocket frames' worth
    ws.publish(f"{uid}/to-tcp", big, qos=1)
    tcp.publish(f"{uid}/to-ws", b"small", qos=1)
    assert tcp.expect_one().payload == big
    assert ws.expect_one().payload == b"small"
