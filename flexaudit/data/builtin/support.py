"""The support domain: synthetic customer-support tickets of a US online shop, and its automated notices.

The order-delay notice is the domain's form letter (see `synthetic` for the duplication profile): the shop's
system files the same wording into a ticket for every late order, the customer's details in its fields."""

from __future__ import annotations

import datetime as dt
import random

from flexaudit.data.builtin.registry import DomainSpec, register
from flexaudit.data.builtin.synthetic import (
    RecordWriter,
    date_between,
    fresh_number,
    make_person,
    record_count,
    synthetic_builder,
)

_PRODUCTS = ["wireless earbuds", "espresso machine", "standing desk", "air fryer", "running shoes",
             "4K monitor", "robot vacuum", "hiking backpack", "smart thermostat", "yoga mat", "office chair",
             "electric kettle", "phone case", "mechanical keyboard", "winter jacket", "baby stroller"]

# Per issue: (ticket subject, customer messages, agent replies). {order}, {product} and {last4} are
# filled in; several wordings each so that a small model cannot learn the domain as a few strings.
_ISSUES = {
    "late": (
        "Where is my order {order}?",
        ["My order {order} ({product}) was supposed to arrive last week and tracking has not moved in "
         "five days. Can you tell me what is going on?",
         "Still waiting on order {order}. The tracking page just says 'label created'. I need the "
         "{product} before the weekend.",
         "It's been 12 days since I ordered the {product} (order {order}). Is it lost?"],
        ["The carrier confirmed the parcel was delayed at the regional hub; it is back in transit and "
         "should arrive in 2-3 business days. I've refunded the shipping fee.",
         "I'm sorry for the wait. The package was marked lost, so I've shipped a new {product} by "
         "express at no charge.",
         "Tracking shows the parcel was delivered to a neighbour's porch. If it hasn't turned up by "
         "tomorrow, reply here and we'll send a replacement."]),
    "damaged": (
        "{product} arrived broken",
        ["The {product} from order {order} arrived with a cracked casing and the box was crushed. I have "
         "photos if you need them.",
         "Opened my {product} today (order {order}) and it won't turn on. Looks like it was dropped.",
         "Order {order}: the {product} has a big scratch across the front. Not happy."],
        ["Sorry about that! A replacement {product} ships today and a prepaid return label is attached.",
         "Thanks for the photos. I've issued a full refund; there's no need to send the item back.",
         "Could you send a photo of the shipping label? Once we have it I'll process the exchange."]),
    "wrong_item": (
        "Wrong item in order {order}",
        ["I opened order {order} and found someone else's item instead of the {product} I paid for.",
         "You sent me the wrong size/colour. Order {order} was for a {product}.",
         "Order {order} arrived but it's a completely different product, not the {product}."],
        ["We've sent the correct item by express shipping; please keep or donate the other one.",
         "Apologies for the mix-up. A return label is on its way and the right {product} ships today."]),
    "refund": (
        "Refund request - {product}",
        ["I returned the {product} (order {order}) two weeks ago and still have not seen my refund.",
         "Please cancel order {order} and refund me, I found the {product} cheaper elsewhere.",
         "The {product} doesn't fit my desk. How do I get a refund for order {order}?"],
        ["The return was received on our side and the refund has now been issued; allow 5-7 days.",
         "Your order was cancelled before shipping, so the refund went out immediately.",
         "Returns are free within 30 days; I've emailed you a label. The refund follows once it's scanned."]),
    "double_charge": (
        "Charged twice",
        ["My card ending {last4} was charged twice for order {order}. Please refund the duplicate.",
         "I see two identical charges on my card ending {last4} for order {order}. What happened?"],
        ["I can see the duplicate authorisation; it has been voided and will drop off your statement.",
         "Only one charge settled on our side; the second was a pending hold that expires within 3 days."]),
    "account": (
        "Can't log in to my account",
        ["I get 'invalid password' every time even after resetting it. My last order was {order}.",
         "My account got locked after I changed phones. The last thing I bought was order {order}.",
         "I never received the verification code. Please help, I need to check order {order}."],
        ["I've unlocked the account and sent a fresh reset link; it expires in 30 minutes.",
         "I've switched two-step verification to email for now. You should be able to log in."]),
}


def _support_setup(fake, rng: random.Random) -> dict:
    store = f"{fake.last_name()}{rng.choice(['Direct', 'Goods', 'Market', 'Outfitters', 'Home'])}"
    return {"agents": [fake.first_name() for _ in range(15)], "store": store, "orders": set()}


def _support_subject(fake, rng: random.Random, world: dict) -> list[RecordWriter]:
    person = make_person(fake, rng, us=True)
    customer = {"person": person, "last4": f"{rng.randrange(10**4):04d}"}
    days = sorted(date_between(rng, dt.date(2021, 1, 1), dt.date(2024, 12, 31)) for _ in range(record_count(rng)))
    tickets = []
    for day in days:
        order = f"{rng.choice('ABCDEFGHJK')}{fresh_number(rng, 9, world['orders'])}"
        tickets.append((_notice if rng.random() < 1 / 6 else _ticket)(rng, world, customer, day, order))
    return tickets


def _ticket(rng: random.Random, world: dict, customer: dict, day: dt.date, order: str) -> RecordWriter:
    w, p = RecordWriter(), customer["person"]
    issue = rng.choice(sorted(_ISSUES))
    subject, messages, replies = _ISSUES[issue]
    fill = {"order": order, "product": rng.choice(_PRODUCTS), "last4": customer["last4"]}
    w.add(f"Ticket #{rng.randrange(10**6):06d} | {world['store']} Support | opened {day.isoformat()}")
    w.add(f"From: {w.pii('name', p.name)} <{w.pii('email', p.email)}>")
    w.add(f"Subject: {subject.format(**fill)}", "")
    w.pii("order_number", order)
    w.add(rng.choice(["Hi,", "Hello there,", "Hi team,", "To whom it may concern,", "Hey"]))
    w.add(rng.choice(messages).format(**fill))
    if issue in ("late", "damaged", "wrong_item") or rng.random() < 0.3:
        w.add(f"Shipping address: {w.pii('address', p.address)}")
    if rng.random() < 0.5:
        w.add(rng.choice(["You can call me at", "My number is", "Phone:"]) + f" {w.pii('phone', p.phone)}")
    w.add(rng.choice([f"- {p.first}", f"Thanks, {p.first}", f"Regards,\n{p.name}"]), "")
    w.add(f"Reply from {rng.choice(world['agents'])}:")
    w.add(rng.choice([f"Hi {p.first},", f"Hello {p.first}, thanks for reaching out.",
                      f"Thanks for your patience, {p.first}."]))
    w.add(rng.choice(replies).format(**fill))
    w.add(f"Status: {rng.choice(['solved', 'pending customer', 'escalated to tier 2', 'closed'])}")
    return w


def _notice(rng: random.Random, world: dict, customer: dict, day: dt.date, order: str) -> RecordWriter:
    """A form letter filed as a ticket: only its fields change from one order to the next."""
    w, p = RecordWriter(), customer["person"]
    product = rng.choice(_PRODUCTS)
    w.add(f"Ticket #{rng.randrange(10**6):06d} | {world['store']} Support | opened {day.isoformat()}")
    w.add(f"To: {w.pii('name', p.name)} <{w.pii('email', p.email)}>")
    w.add(f"Subject: Your order {w.pii('order_number', order)} is delayed", "")
    w.add(f"Hi {p.first},", "")
    w.add(f"We're sorry: your {product} (order {order}) will not arrive on the date we promised. Our carrier now "
          f"expects to deliver it to {w.pii('address', p.address)} within {rng.randint(3, 9)} business days.")
    w.add(f"You don't need to do anything. If you would rather cancel, reply to this message from "
          f"{p.email} and we will refund the card ending {customer['last4']} in full.")
    w.add("", f"The {world['store']} team (automated notice)", "Status: closed")
    return w


register(DomainSpec("support", "Synthetic customer-support tickets (US online shop)",
                    True, synthetic_builder("support", "en_US", _support_setup, _support_subject, "shopper")))
