"""Behaviour every MQTT broker must show, for MQTT 3.1.1 and 5.0, driven by paho-mqtt 2.x."""

from __future__ import annotations

import pytest
from conftest import QUIET

PROTOCOLS = pytest.mark.parametrize("proto", [4, 5], ids=["v311", "v5"])


@PROTOCOLS
@pytest.mark.parametrize("pub_qos", [0, 1, 2])
@pytest.mark.parametrize("sub_qos", [0, 1, 2])
def test_qos_round_trip(clients, uid, proto, pub_qos, sub_qos):
    """A message is delivered once, at the lower of the publish and subscription QoS (MQTT 3.1.1 3.8.4)."""
    sub = clients(f"{uid}-sub", protocol=proto)
    granted = sub.subscribe(f"{uid}/t", sub_qos)
    assert [g.value for g in granted] == [sub_qos]
    pub = clients(f"{uid}-pub", protocol=proto)
    pub.publish(f"{uid}/t", b"hello", qos=pub_qos)
    m = sub.expect_one()
    assert (m.topic, m.payload, m.qos, m.retain) == (f"{uid}/t", b"hello", min(pub_qos, sub_qos), False)
    sub.expect_none()


@PROTOCOLS
def test_qos1_many_in_order(clients, uid, proto):
    """QoS 1 messages from one publisher on one topic arrive in order (MQTT 3.1.1 4.6.0)."""
    sub = clients(f"{uid}-sub", protocol=proto)
    sub.subscribe(f"{uid}/t", 1)
    pub = clients(f"{uid}-pub", protocol=proto)
    for i in range(50):
        pub.c.publish(f"{uid}/t", str(i).encode(), qos=1)
    got = [m.payload for m in sub.expect(50, timeout=10)]
    assert got == [str(i).encode() for i in range(50)]


@PROTOCOLS
def test_retained_set_replace_delete(clients, uid, proto):
    topic = f"{uid}/ret"
    pub = clients(f"{uid}-pub", protocol=proto)
    pub.publish(topic, b"first", qos=1, retain=True)
    pub.publish(topic, b"second", qos=1, retain=True)

    s1 = clients(f"{uid}-s1", protocol=proto)
    s1.subscribe(topic, 1)
    m = s1.expect_one()
    assert (m.payload, m.retain) == (b"second", True), "a new subscription gets the latest retained message"
    s1.expect_none()

    # A live subscriber gets a retained publish with retain 0 (3.3.1-9 / 5.0: unless retain-as-published).
    pub.publish(topic, b"third", qos=1, retain=True)
    m = s1.expect_one()
    assert (m.payload, m.retain) == (b"third", False)

    # An empty retained payload deletes the retained message (3.3.1-10/11); it is still forwarded live.
    pub.publish(topic, b"", qos=1, retain=True)
    m = s1.expect_one()
    assert m.payload == b""

    s2 = clients(f"{uid}-s2", protocol=proto)
    s2.subscribe(topic, 1)
    s2.expect_none()


@PROTOCOLS
def test_retained_delivered_through_wildcard(clients, uid, proto):
    pub = clients(f"{uid}-pub", protocol=proto)
    pub.publish(f"{uid}/a/x", b"ax", qos=1, retain=True)
    pub.publish(f"{uid}/b/x", b"bx", qos=1, retain=True)
    pub.publish(f"{uid}/b/y", b"by", qos=1, retain=True)
    sub = clients(f"{uid}-sub", protocol=proto)
    sub.subscribe(f"{uid}/+/x", 1)
    got = sorted((m.topic, m.payload, m.retain) for m in sub.expect(2))
    assert got == [(f"{uid}/a/x", b"ax", True), (f"{uid}/b/x", b"bx", True)]
    sub.expect_none()
    for t in ("a/x", "b/x", "b/y"):
        pub.publish(f"{uid}/{t}", b"", qos=1, retain=True)


@PROTOCOLS
def test_will_published_on_abnormal_disconnect(clients, uid, proto):
    watcher = clients(f"{uid}-w", protocol=proto)
    watcher.subscribe(f"{uid}/will", 1)
    dying = clients(f"{uid}-d", protocol=proto, connect=False)
    dying.will(f"{uid}/will", b"gone", qos=1)
    dying.connect()
    dying.drop()
    m = watcher.expect_one()
    assert (m.topic, m.payload, m.qos) == (f"{uid}/will", b"gone", 1)


@PROTOCOLS
def test_retained_will(clients, uid, proto):
    dying = clients(f"{uid}-d", protocol=proto, connect=False)
    dying.will(f"{uid}/will", b"offline", qos=1, retain=True)
    dying.connect()
    dying.drop()
    late = clients(f"{uid}-late", protocol=proto)
    # The will is published once the broker notices the closed socket: poll with fresh subscriptions.
    for _ in range(20):
        late.subscribe(f"{uid}/will", 1)
        got = late.drain(0.25)
        if got:
            assert [(m.payload, m.retain) for m in got] == [(b"offline", True)]
            break
        late.unsubscribe(f"{uid}/will")
    else:
        raise AssertionError("retained will never appeared")
    clients(f"{uid}-c", protocol=proto).publish(f"{uid}/will", b"", qos=1, retain=True)


@PROTOCOLS
def test_no_will_on_normal_disconnect(clients, uid, proto):
    watcher = clients(f"{uid}-w", protocol=proto)
    watcher.subscribe(f"{uid}/will", 1)
    leaving = clients(f"{uid}-l", protocol=proto, connect=False)
    leaving.will(f"{uid}/will", b"gone", qos=1)
    leaving.connect()
    leaving.disconnect()
    watcher.expect_none(1.0)


@PROTOCOLS
def test_wildcards(clients, uid, proto):
    sub_plus = clients(f"{uid}-p", protocol=proto)
    sub_plus.subscribe(f"{uid}/+/temp", 0)
    sub_hash = clients(f"{uid}-h", protocol=proto)
    sub_hash.subscribe(f"{uid}/house/#", 0)
    pub = clients(f"{uid}-pub", protocol=proto)
    for t in ("house/temp", "garden/temp", "house/kitchen/temp", "house", "housex/temp", "garden/temp/x"):
        pub.publish(f"{uid}/{t}", t.encode(), qos=1)
    plus = sorted(m.topic for m in sub_plus.expect(3))
    assert plus == [f"{uid}/garden/temp", f"{uid}/house/temp", f"{uid}/housex/temp"]
    sub_plus.expect_none()
    # "house/#" also matches the parent level "house" (MQTT 3.1.1 4.7.1.2).
    hashed = sorted(m.topic for m in sub_hash.expect(3))
    assert hashed == [f"{uid}/house", f"{uid}/house/kitchen/temp", f"{uid}/house/temp"]
    sub_hash.expect_none()


def test_overlapping_subscriptions_single_client(clients, uid):
    """Two matching filters of one client: delivered with the highest granted QoS (5.0 3.3.4).

    Only 5.0: Mosquitto 2.0 delivers a single QoS 0 copy for 3.1.1, against 3.1.1 section 3.3.5.
    """
    proto = 5
    sub = clients(f"{uid}-sub", protocol=proto)
    sub.subscribe(f"{uid}/a/+", 0)
    sub.subscribe(f"{uid}/#", 1)
    clients(f"{uid}-pub", protocol=proto).publish(f"{uid}/a/b", b"x", qos=1)
    got = sub.drain(QUIET + 0.5)
    assert got, "no delivery"
    assert max(m.qos for m in got) == 1
    assert len(got) <= 2


@PROTOCOLS
def test_hash_does_not_match_sys(clients, uid, proto):
    """Filters starting with a wildcard do not match topics starting with $ (MQTT 3.1.1 4.7.2-1)."""
    everything = clients(f"{uid}-all", protocol=proto)
    everything.subscribe("#", 0)
    plus = clients(f"{uid}-plus", protocol=proto)
    plus.subscribe("+/broker/#", 0)
    sys = clients(f"{uid}-sys", protocol=proto)
    sys.subscribe("$SYS/#", 0)
    # Both brokers publish $SYS topics at least every 10 s (Mosquitto also retains them).
    sys.expect_one(timeout=12)
    clients(f"{uid}-pub", protocol=proto).publish(f"{uid}/marker", b"m", qos=1)
    seen = everything.drain(1.0)
    assert f"{uid}/marker" in [m.topic for m in seen]
    assert [m.topic for m in seen if m.topic.startswith("$")] == []
    assert [m.topic for m in plus.drain(0.1) if m.topic.startswith("$")] == []


@PROTOCOLS
def test_shared_subscription_each_message_to_one_member(clients, uid, proto):
    topic = f"{uid}/jobs"
    members = [clients(f"{uid}-m{i}", protocol=proto) for i in range(2)]
    for m in members:
        m.subscribe(f"$share/g/{topic}", 1)
    plain = clients(f"{uid}-plain", protocol=proto)
    plain.subscribe(topic, 1)
    pub = clients(f"{uid}-pub", protocol=proto)
    n = 20
    for i in range(n):
        pub.publish(topic, str(i).encode(), qos=1)
    assert sorted(int(m.payload) for m in plain.expect(n)) == list(range(n))
    got = [[int(m.payload) for m in member.drain(1.0)] for member in members]
    assert sorted(got[0] + got[1]) == list(range(n)), f"each message to exactly one member: {got}"


@PROTOCOLS
def test_session_resume_with_queued_messages(clients, uid, proto):
    topic = f"{uid}/q"
    persistent = dict(protocol=proto, clean=False, session_expiry=300 if proto == 5 else None)
    first = clients(f"{uid}-p", **persistent, connect=False)
    present, _, _ = first.connect()
    assert not present
    first.subscribe(topic, 1)
    first.disconnect()

    pub = clients(f"{uid}-pub", protocol=proto)
    for i in range(5):
        pub.publish(topic, f"m{i}".encode(), qos=1)

    second = clients(f"{uid}-p", **persistent, connect=False)
    present, _, _ = second.connect()
    assert present, "session present after reconnecting with clean session 0 / clean start 0"
    got = [(m.payload, m.qos) for m in second.expect(5)]
    assert got == [(f"m{i}".encode(), 1) for i in range(5)]
    second.expect_none()
    # The subscription survived too.
    pub.publish(topic, b"live", qos=1)
    assert second.expect_one().payload == b"live"
    second.disconnect()

    # A clean connection discards the session.
    third = clients(f"{uid}-p", protocol=proto, clean=True, connect=False)
    present, _, _ = third.connect()
    assert not present
    third.disconnect()


@PROTOCOLS
def test_session_takeover(clients, uid, proto):
    """A second connection with the same client id disconnects the first (MQTT 3.1.1 3.1.4-2)."""
    first = clients(f"{uid}-dup", protocol=proto)
    first.subscribe(f"{uid}/t", 1)
    second = clients(f"{uid}-dup", protocol=proto, connect=False)
    # paho reconnects automatically; stop the first client from fighting back.
    first.c.reconnect_delay_set(60, 120)
    second.connect()
    # 5.0 says the broker "sends a DISCONNECT with 0x8E" but only the close is a MUST (3.1.4-3): Mosquitto 2.0
    # closes without DISCONNECT, so here only the close is checked (raw_protocol.rs checks Wasp's 0x8E).
    first.expect_disconnect()
    first.c.loop_stop()
    first.connected = False
    clients(f"{uid}-pub", protocol=proto).publish(f"{uid}/t", b"x", qos=1)
    second.expect_none(0.5)  # clean session by default: no subscription carried over
