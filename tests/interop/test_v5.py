"""MQTT 5.0 features, driven by paho-mqtt 2.x."""

from __future__ import annotations

import time

from conftest import props
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions

PUB = PacketTypes.PUBLISH


def test_publish_properties_forwarded(clients, uid):
    """Payload format, content type, response topic, correlation data and user properties reach the subscriber
    unaltered, user properties in order (3.3.2-4, 3.3.2-15, 3.3.2-16, 3.3.2-17, 3.3.2-20)."""
    sub = clients(f"{uid}-sub")
    sub.subscribe(f"{uid}/req", 1)
    pub = clients(f"{uid}-pub")
    p = props(
        PUB,
        PayloadFormatIndicator=1,
        ContentType="application/json",
        ResponseTopic=f"{uid}/resp",
        CorrelationData=b"\x00\x01corr",
        UserProperty=[("k", "v1"), ("k", "v2"), ("a", "b")],
    )
    pub.publish(f"{uid}/req", b'{"x":1}', qos=1, properties=p)
    m = sub.expect_one()
    mp = m.properties
    assert m.payload == b'{"x":1}'
    assert mp.PayloadFormatIndicator == 1
    assert mp.ContentType == "application/json"
    assert mp.ResponseTopic == f"{uid}/resp"
    assert mp.CorrelationData == b"\x00\x01corr"
    assert mp.UserProperty == [("k", "v1"), ("k", "v2"), ("a", "b")]


def test_message_expiry_forwarded_and_enforced(clients, uid):
    """The forwarded expiry is the received one minus the time spent waiting (3.3.2-6); an expired queued
    message is not delivered (3.3.2-5)."""
    topic = f"{uid}/exp"
    sub = clients(f"{uid}-sub")
    sub.subscribe(topic, 1)
    pub = clients(f"{uid}-pub")
    pub.publish(topic, b"live", qos=1, properties=props(PUB, MessageExpiryInterval=100))
    m = sub.expect_one()
    assert 99 <= m.properties.MessageExpiryInterval <= 100

    off = clients(f"{uid}-off", clean=False, session_expiry=60, connect=False)
    off.connect()
    off.subscribe(topic, 1)
    off.disconnect()
    pub.publish(topic, b"short", qos=1, properties=props(PUB, MessageExpiryInterval=1))
    pub.publish(topic, b"long", qos=1, properties=props(PUB, MessageExpiryInterval=100))
    time.sleep(2.2)  # the waiting time is the point of this test
    back = clients(f"{uid}-off", clean=False, session_expiry=60, connect=False)
    present, _, _ = back.connect()
    assert present
    m = back.expect_one()
    assert m.payload == b"long"
    assert 90 <= m.properties.MessageExpiryInterval <= 98
    back.expect_none()
    back.disconnect()


def test_no_local(clients, uid):
    """No Local: a client does not receive its own publications on that subscription (3.8.3-3)."""
    c = clients(f"{uid}-c")
    c.subscribe(f"{uid}/nl", options=SubscribeOptions(qos=1, noLocal=True))
    other = clients(f"{uid}-o")
    c.publish(f"{uid}/nl", b"own", qos=1)
    other.publish(f"{uid}/nl", b"other", qos=1)
    assert c.expect_one().payload == b"other"
    c.expect_none()


def test_retain_as_published(clients, uid):
    """Retain As Published keeps the RETAIN flag on live forwarding (3.3.1-12 / 3.3.1-13)."""
    rap = clients(f"{uid}-rap")
    rap.subscribe(f"{uid}/r", options=SubscribeOptions(qos=1, retainAsPublished=True))
    plain = clients(f"{uid}-plain")
    plain.subscribe(f"{uid}/r", options=SubscribeOptions(qos=1, retainAsPublished=False))
    pub = clients(f"{uid}-pub")
    pub.publish(f"{uid}/r", b"x", qos=1, retain=True)
    assert rap.expect_one().retain is True
    assert plain.expect_one().retain is False
    pub.publish(f"{uid}/r", b"", qos=1, retain=True)


def test_retain_handling(clients, uid):
    """Retain Handling 0: send retained on every subscribe; 1: only if the subscription is new; 2: never
    (3.3.1-9, 3.3.1-10, 3.3.1-11)."""
    topic = f"{uid}/rh"
    clients(f"{uid}-pub").publish(topic, b"kept", qos=1, retain=True)

    c0 = clients(f"{uid}-c0")
    for _ in range(2):
        c0.subscribe(topic, options=SubscribeOptions(qos=1, retainHandling=0))
        assert c0.expect_one().payload == b"kept"

    c1 = clients(f"{uid}-c1")
    c1.subscribe(topic, options=SubscribeOptions(qos=1, retainHandling=1))
    assert c1.expect_one().payload == b"kept"
    c1.subscribe(topic, options=SubscribeOptions(qos=1, retainHandling=1))
    c1.expect_none()

    c2 = clients(f"{uid}-c2")
    c2.subscribe(topic, options=SubscribeOptions(qos=1, retainHandling=2))
    c2.expect_none()
    clients(f"{uid}-clr").publish(topic, b"", qos=1, retain=True)


def test_subscription_identifiers(clients, uid):
    """Each matching subscription's identifier is returned with the message (3.3.4-3)."""
    c = clients(f"{uid}-c")
    c.subscribe(f"{uid}/s/+", 1, properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=7))
    c.subscribe(f"{uid}/s/#", 1, properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=300))
    c.subscribe(f"{uid}/s/x/none", 1)
    pub = clients(f"{uid}-pub")
    pub.publish(f"{uid}/s/x", b"1", qos=1)
    got = c.drain(1.0)
    assert got, "no delivery"
    ids = sorted(i for m in got for i in getattr(m.properties, "SubscriptionIdentifier", []))
    assert ids == [7, 300]
    pub.publish(f"{uid}/s/x/none", b"2", qos=1)
    got = c.drain(1.0)
    # One copy per matching subscription or one copy in all: either way only identifier 300 applies.
    assert 1 <= len(got) <= 2 and all(m.payload == b"2" for m in got), [m.payload for m in got]
    assert sorted(i for m in got for i in getattr(m.properties, "SubscriptionIdentifier", [])) == [300]


def test_topic_alias_from_client(clients, uid):
    """A client sets a topic alias with its first PUBLISH and then publishes with an empty topic (3.3.2.3.4)."""
    sub = clients(f"{uid}-sub")
    sub.subscribe(f"{uid}/alias", 1)
    pub = clients(f"{uid}-pub", connect=False)
    _, _, connack = pub.connect()
    maximum = getattr(connack, "TopicAliasMaximum", 0)
    assert maximum >= 1, "both brokers under test accept topic aliases"
    pub.publish(f"{uid}/alias", b"a", qos=1, properties=props(PUB, TopicAlias=1))
    pub.publish("", b"b", qos=1, properties=props(PUB, TopicAlias=1))
    got = [(m.topic, m.payload) for m in sub.expect(2)]
    assert got == [(f"{uid}/alias", b"a"), (f"{uid}/alias", b"b")]


def test_assigned_client_identifier(clients, uid):
    """An empty client id gets an Assigned Client Identifier in CONNACK (3.2.2.3.7)."""
    c = clients("", connect=False)
    _, rc, connack = c.connect()
    assigned = getattr(connack, "AssignedClientIdentifier", "")
    assert assigned, "CONNACK carries an Assigned Client Identifier"
    d = clients("", connect=False)
    _, _, connack2 = d.connect()
    assert connack2.AssignedClientIdentifier != assigned


def test_session_expiry_zero_ends_session(clients, uid):
    """Session Expiry Interval 0 (the default): the session ends with the connection (3.1.2-23)."""
    a = clients(f"{uid}-s", clean=False, connect=False)
    a.connect()
    a.subscribe(f"{uid}/t", 1)
    a.disconnect()
    b = clients(f"{uid}-s", clean=False, connect=False)
    present, _, _ = b.connect()
    assert not present


def test_will_delay_and_properties(clients, uid):
    """Will properties are forwarded; a will delay longer than the session holds it until the session ends
    (3.1.3-9); here both are 1 s, so the will arrives after about a second, not at once."""
    watcher = clients(f"{uid}-w")
    watcher.subscribe(f"{uid}/will", 1)
    dying = clients(f"{uid}-d", clean=True, session_expiry=1, connect=False)
    dying.will(f"{uid}/will", b"bye", qos=1, properties=props(PacketTypes.WILLMESSAGE, WillDelayInterval=1,
                                                             ContentType="text/plain",
                                                             UserProperty=[("why", "test")]))
    dying.connect()
    start = time.monotonic()
    dying.drop()
    m = watcher.expect_one(timeout=6)
    waited = time.monotonic() - start
    assert m.payload == b"bye"
    assert m.properties.ContentType == "text/plain"
    assert m.properties.UserProperty == [("why", "test")]
    assert waited >= 0.9, f"will published after {waited:.2f}s despite a 1 s will delay"


def test_request_response(clients, uid):
    """Request/response as 5.0 describes it: the responder answers on the response topic with the correlation
    data, which the requester gets back (4.10)."""
    responder = clients(f"{uid}-resp")
    responder.subscribe(f"{uid}/service", 1)
    requester = clients(f"{uid}-req")
    requester.subscribe(f"{uid}/reply", 1)
    requester.publish(f"{uid}/service", b"ping", qos=1,
                      properties=props(PUB, ResponseTopic=f"{uid}/reply", CorrelationData=b"42"))
    req = responder.expect_one()
    responder.publish(req.properties.ResponseTopic, b"pong", qos=1,
                      properties=props(PUB, CorrelationData=req.properties.CorrelationData))
    rep = requester.expect_one()
    assert (rep.payload, rep.properties.CorrelationData) == (b"pong", b"42")
