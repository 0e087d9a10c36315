# host-only. The retained per-kiosk config message (DESIGN.md 2, protocol "config" kind):
# service and price, deny/allow lists with their version, clock, offline limits. Built
# from the database; published by the bridge on start, on block/unblock and on rules or
# registry changes.
import time

from sqlalchemy import select

from bridge import pricing, registry, schema
from bridge.db import counter
from protocol import messages, topics, utctime

ALLOW_BUDGET = 30000  # bytes; the config message is capped at 32 KB by the protocol


def config_message(conn, kiosk_id, now=None):
    """The config dict for a kiosk, or None if it is not registered."""
    k = schema.kiosks
    row = conn.execute(select(k.c.merchant_id, k.c.service).where(k.c.id == kiosk_id)).first()
    if row is None:
        return None
    merchant_id, service = row
    rules = pricing.current(conn)
    price = (rules.price(merchant_id, service) if rules else None) or 0
    deny, allow = registry.card_lists(conn)
    # A site with more cards than fit: send no allow list; kiosks then decide offline from
    # the deny list alone (and the bridge flags what it would have declined).
    if 11 * (len(deny) + len(allow)) > ALLOW_BUDGET:
        allow = []
    limits = dict(rules.offline) if rules else {}
    return {"v": messages.VERSION, "kiosk": kiosk_id, "merchant": merchant_id,
            "service": service, "price": price,
            "lists_version": counter(conn, "lists_version"), "deny": deny, "allow": allow,
            "clock": utctime.iso(time.time() if now is None else now), "offline": limits}


def config_payload(conn, kiosk_id, now=None):
    msg = config_message(conn, kiosk_id, now)
    return None if msg is None else messages.encode("config", msg)


def publish_config(client, engine, kiosk_id):
    """Publish one kiosk's retained config (QoS 1) with a connected paho client."""
    with engine.connect() as conn:
        payload = config_payload(conn, kiosk_id)
    if payload is not None:
        client.publish(topics.config(kiosk_id), payload, qos=1, retain=True)
    return payload


def publish_all(client, engine):
    with engine.connect() as conn:
        ids = [r[0] for r in conn.execute(select(schema.kiosks.c.id))]
    for kiosk_id in ids:
        publish_config(client, engine, kiosk_id)
    return len(ids)
