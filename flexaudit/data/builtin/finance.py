"""The finance domain: synthetic UK bank records (statements, card logs, transfers, loans, arrears letters).

The arrears letter is the domain's form letter (see `synthetic` for the duplication profile): the same wording
each month, the customer's name, address, account and the amounts in its fields."""

from __future__ import annotations

import datetime as dt
import random

from flexaudit.data.builtin.registry import DomainSpec, register
from flexaudit.data.builtin.synthetic import (
    RecordWriter,
    date_between,
    fmt_date,
    fresh_number,
    grouped,
    iban_gb,
    make_card_number,
    make_person,
    money,
    record_count,
    staff,
    synthetic_builder,
)

_BANKS = [("Northgate Bank", "NGTB"), ("Harbour & Vale Building Society", "HAVL"),
          ("Cobalt Mutual", "CBLT"), ("Wexford Street Bank", "WXFD"), ("Lantern Savings", "LNTN")]
_DEBITS = ["COUNCIL TAX", "THAMES UTILITIES", "BRITELINE ENERGY", "FIBRENET BROADBAND", "MOBILEONE",
           "GYMFLEX MEMBERSHIP", "HOME INSURANCE PLC", "TV LICENCE"]
_SHOPS = ["Corner Shop", "Supermarket", "Petrol Station", "Pharmacy", "Cafe", "Bakery", "Bookshop",
          "Garden Centre", "Takeaway", "Hardware"]


def _finance_setup(fake, rng: random.Random) -> dict:
    merchants = [f"{fake.last_name().upper()} {rng.choice(_SHOPS).upper()}" for _ in range(30)]
    merchants += [fake.company().upper() for _ in range(20)]
    return {"agents": staff(fake, rng, 12, [""]), "merchants": merchants,
            "employers": [fake.company() for _ in range(25)], "accounts": set()}


def _finance_subject(fake, rng: random.Random, world: dict) -> list[RecordWriter]:
    person = make_person(fake, rng, us=False)
    bank, bank_code = rng.choice(_BANKS)
    sort_code = f"{rng.randint(10, 99)}{rng.randint(0, 99):02d}{rng.randint(0, 99):02d}"
    account = fresh_number(rng, 8, world["accounts"])
    customer = {"person": person, "bank": bank, "sort": f"{sort_code[:2]}-{sort_code[2:4]}-{sort_code[4:]}",
                "account": account, "iban": iban_gb(bank_code, sort_code, account), "card": make_card_number(rng),
                "employer": rng.choice(world["employers"]), "salary": round(rng.uniform(1400, 5200), 2),
                "balance": round(rng.uniform(-300, 9000), 2)}
    days = sorted(date_between(rng, dt.date(2020, 1, 1), dt.date(2024, 12, 31)) for _ in range(record_count(rng)))
    # Transaction records, as a bank holds them: statements, payment confirmations, card logs, loan forms.
    templates = [_statement, _statement, _transfer_confirmation, _card_log, _loan_summary, _arrears_letter]
    return [rng.choice(templates)(rng, world, customer, day) for day in days]


def _gb_date(rng: random.Random, day: dt.date) -> str:
    return fmt_date(rng, day, us=False)


def _iban_text(w: RecordWriter, rng: random.Random, iban: str) -> str:
    return w.pii("iban", grouped(iban) if rng.random() < 0.6 else iban)


def _transaction(rng: random.Random, world: dict, customer: dict, day: dt.date) -> tuple[str, float]:
    kind = rng.random()
    if kind < 0.5:
        return f"CARD PAYMENT TO {rng.choice(world['merchants'])}", -round(rng.uniform(2, 140), 2)
    if kind < 0.7:
        return f"DIRECT DEBIT {rng.choice(_DEBITS)}", -round(rng.uniform(9, 190), 2)
    if kind < 0.8:
        return f"CASH WITHDRAWAL {rng.choice(['ATM', 'LINK ATM'])}", -float(rng.choice([10, 20, 40, 50, 100]))
    if kind < 0.9:
        return f"FASTER PAYMENT FROM {customer['employer'].upper()} SALARY", customer["salary"]
    return "TRANSFER FROM SAVINGS", float(rng.choice([50, 100, 250, 500]))


def _statement(rng: random.Random, world: dict, customer: dict, day: dt.date) -> RecordWriter:
    w, p = RecordWriter(), customer["person"]
    w.add(f"{customer['bank']} - Current Account Statement")
    w.add(f"{p.title} {w.pii('name', p.name)}" if rng.random() < 0.5 else w.pii("name", p.name.upper()))
    w.add(w.pii("address", p.address))
    w.add(f"Sort code {customer['sort']}   Account {w.pii('account_number', customer['account'])}")
    if rng.random() < 0.6:
        w.add(f"IBAN {_iban_text(w, rng, customer['iban'])}")
    w.add(f"Statement period ending {_gb_date(rng, day)}", "")
    balance = customer["balance"]
    w.add(f"Opening balance {money(balance, '£')}")
    start = day - dt.timedelta(days=30)
    for when in sorted(date_between(rng, start, day) for _ in range(rng.randint(3, 7))):
        text, amount = _transaction(rng, world, customer, when)
        balance = round(balance + amount, 2)
        w.add(f"{when.strftime('%d %b')}  {text:<42} {amount:>+10,.2f}  {balance:>10,.2f}")
    customer["balance"] = balance
    w.add(f"Closing balance {money(balance, '£')}")
    return w


def _card_log(rng: random.Random, world: dict, customer: dict, day: dt.date) -> RecordWriter:
    """The bank's own card-transaction log for one card: full card number, holder, contact, authorisations."""
    w, p = RecordWriter(), customer["person"]
    w.add(f"CARD TRANSACTION LOG - {customer['bank'].upper()} - {_gb_date(rng, day)}")
    w.add(f"PAN {w.pii('card_number', grouped(customer['card']) if rng.random() < 0.5 else customer['card'])}"
          f"  HOLDER {w.pii('name', p.name.upper())}")
    w.add(f"TEL {w.pii('phone', p.phone)}  ACCOUNT {w.pii('account_number', customer['account'])}")
    start = day - dt.timedelta(days=7)
    for when in sorted(date_between(rng, start, day) for _ in range(rng.randint(4, 9))):
        amount = rng.uniform(1.5, 180)
        status = rng.choices(["APPROVED", "DECLINED", "REVERSED"], weights=[90, 7, 3])[0]
        w.add(f"{when.strftime('%d/%m')} {rng.randint(6, 22):02d}:{rng.randint(0, 59):02d}  "
              f"{rng.choice(world['merchants'])[:28]:<28} GBP {amount:>8.2f}  AUTH {rng.randrange(10**6):06d}  {status}")
    if rng.random() < 0.3:
        customer["card"] = make_card_number(rng)
        w.add(f"CARD REISSUED: NEW PAN {w.pii('card_number', customer['card'])}")
    return w


def _transfer_confirmation(rng: random.Random, world: dict, customer: dict, day: dt.date) -> RecordWriter:
    w, p = RecordWriter(), customer["person"]
    amount = rng.choice([25, 60, 120, 250, 400, 750, 1200, 3000]) + rng.choice([0, 0, 0.5, 0.99])
    w.add(f"PAYMENT CONFIRMATION - {customer['bank'].upper()}")
    w.add(f"Date: {_gb_date(rng, day)}")
    w.add(f"From: {w.pii('name', p.name)}, IBAN {_iban_text(w, rng, customer['iban'])}")
    w.add(f"To: {rng.choice(world['employers'])} / payee reference "
          + rng.choice(["RENT", "INVOICE", "DEPOSIT", "SCHOOL FEES", "LOAN REPAYMENT"])
          + f" {rng.randrange(10**5):05d}")
    w.add(f"Amount: {money(amount, '£')}   Method: {rng.choice(['Faster Payment', 'CHAPS', 'Standing order'])}")
    w.add(rng.choice([
        "The payment has been sent and should arrive within two hours.",
        "This payment is scheduled and will leave your account on the date shown.",
        "The payee's name matched the account details you gave.",
    ]))
    w.add(f"A copy of this confirmation was sent to {w.pii('email', p.email)}.")
    return w


def _loan_summary(rng: random.Random, world: dict, customer: dict, day: dt.date) -> RecordWriter:
    w, p = RecordWriter(), customer["person"]
    amount = rng.choice([2000, 5000, 7500, 10000, 15000, 25000])
    w.add(f"PERSONAL LOAN APPLICATION - received {_gb_date(rng, day)}")
    w.add(f"Applicant: {w.pii('name', p.name)}; date of birth {w.pii('date_of_birth', _gb_date(rng, p.dob))}")
    w.add(f"Address: {w.pii('address', p.address)} (" + rng.choice(["homeowner", "renting", "living with family"])
          + f", {rng.randint(1, 15)} years)")
    w.add(f"Contact: {w.pii('phone', p.phone)} / {w.pii('email', p.email)}")
    w.add(f"Employer: {customer['employer']}; net monthly income {money(customer['salary'], '£')}")
    w.add(f"Requested: {money(amount, '£')} over {rng.choice([24, 36, 48, 60])} months for "
          + rng.choice(["a car", "home improvements", "debt consolidation", "a wedding", "furniture"]))
    w.add(f"Repayment account {w.pii('account_number', customer['account'])}, sort code {customer['sort']}")
    w.add("Decision: " + rng.choice(["approved at 7.9% APR", "approved at 12.4% APR", "declined (credit score)",
                                      "referred for manual underwriting"]))
    return w


def _arrears_letter(rng: random.Random, world: dict, customer: dict, day: dt.date) -> RecordWriter:
    """A form letter: only its fields change from one customer, or one month, to the next."""
    w, p = RecordWriter(), customer["person"]
    overdrawn = round(rng.uniform(40, 1800), 2)
    due = day + dt.timedelta(days=14)
    w.add(f"{customer['bank']}", "", _gb_date(rng, day), "")
    w.add(f"{p.title} {w.pii('name', p.name)}", w.pii("address", p.address), "")
    w.add(f"Dear {p.title} {p.last},", "", f"Your account {w.pii('account_number', customer['account'])} is overdrawn", "")
    w.add(f"Our records show that your current account (sort code {customer['sort']}) was overdrawn by "
          f"{money(overdrawn, '£')} on {_gb_date(rng, day)}. This is above your arranged overdraft limit.")
    w.add(f"To avoid further charges, please pay in at least {money(overdrawn, '£')} by {_gb_date(rng, due)}. "
          f"You can pay online, in branch, or by transfer to IBAN {_iban_text(w, rng, customer['iban'])}.")
    w.add(f"If you are finding it hard to manage your money, please call us on {w.pii('phone', p.phone)} "
          "and ask for the Financial Support Team. We will not charge you for calling.")
    w.add("", "Yours sincerely,", rng.choice(world["agents"]), "Collections Department")
    return w


register(DomainSpec("finance", "Synthetic UK bank records: statements, service notes, fraud letters, loans",
                    True, synthetic_builder("finance", "en_GB", _finance_setup, _finance_subject, "customer")))
