#!/usr/bin/env python3
"""The deskmail round trip, on a running `make run` system (scripts/run.sh) and its demo mail
server: a customer mail becomes a ticket, the auto-reply reaches the customer, the customer's
reply becomes a follow-up on the same ticket. Standard library only.

usage: demo.py [--run-dir DIR] [--timeout SECONDS]

Reads DIR/var/demo-mail.env (written by deskmail-demo-mail) for the ports and mailboxes, and
DIR/var/router.db (the router's SQLite store) for tickets. Exits 1, saying which step timed
out, when something does not arrive.
"""

import argparse
import email
import email.policy
import email.utils
import imaplib
import smtplib
import sqlite3
import ssl
import sys
import time
from email.message import EmailMessage
from pathlib import Path


def load_env(path):
    env = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            env[key.strip()] = value.strip()
    return env


def wait_for(what, timeout, probe):
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            sys.exit(f"demo: no {what} after {timeout:.0f} s; see var/log/*.log")
        time.sleep(0.3)


def send(env, subject, body, in_reply_to=None):
    msg = EmailMessage()
    msg["From"] = f"Carol Customer <{env['DEMO_CUSTOMER']}>"
    msg["To"] = env["DEMO_SUPPORT"]
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg["Message-ID"] = email.utils.make_msgid(domain="client.test")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg.set_content(body)
    with smtplib.SMTP(env["DEMO_MAIL_HOST"], int(env["DEMO_SMTP_PORT"]), timeout=30) as smtp:
        smtp.send_message(msg)
    return msg["Message-ID"]


def ticket_of(db, subject):
    """(ticket number, title, state, article count) of the article with this subject, if any."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:
        return None
    try:
        row = con.execute(
            "SELECT t.number, t.title, t.state, t.id FROM articles a JOIN tickets t ON t.id = a.ticket_id "
            "WHERE a.subject = ?",
            (subject,),
        ).fetchone()
        if not row:
            return None
        count = con.execute("SELECT count(*) FROM articles WHERE ticket_id = ?", (row[3],)).fetchone()[0]
        return row[0], row[1], row[2], count
    except sqlite3.OperationalError:
        return None  # the router has not created its tables yet
    finally:
        con.close()


def customer_mail_with(env, needle):
    """The newest message in the customer's INBOX whose Subject contains needle, parsed."""
    ctx = ssl.create_default_context(cafile=env["DEMO_CA_PEM"])
    with imaplib.IMAP4_SSL(env["DEMO_MAIL_HOST"], int(env["DEMO_IMAPS_PORT"]), ssl_context=ctx) as imap:
        imap.login(env["DEMO_CUSTOMER"], env["DEMO_CUSTOMER_PASSWORD"])
        imap.select("INBOX", readonly=True)
        _, data = imap.search(None, "ALL")
        for num in reversed(data[0].split()):
            _, parts = imap.fetch(num, "(BODY.PEEK[])")
            msg = email.message_from_bytes(parts[0][1], policy=email.policy.default)
            if needle in str(msg.get("Subject", "")):
                return msg
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default=str(Path(__file__).resolve().parent.parent))
    ap.add_argument("--timeout", type=float, default=60)
    args = ap.parse_args()
    run = Path(args.run_dir)
    env_file = run / "var" / "demo-mail.env"
    if not env_file.exists():
        sys.exit(f"demo: {env_file} is missing: start the system with `make run` first")
    env = load_env(env_file)
    db = run / "var" / "router.db"

    subject = f"My printer is on fire (demo {time.strftime('%H:%M:%S')})"
    print(f"1. {env['DEMO_CUSTOMER']} writes to {env['DEMO_SUPPORT']}: {subject!r}")
    send(env, subject, "Hello,\n\nthe printer on floor 3 is smoking. Please help.\n\nCarol\n")

    number, title, state, _ = wait_for("ticket for the customer mail", args.timeout, lambda: ticket_of(db, subject))
    print(f"2. the fetcher, router and store made ticket {number}: {title!r} ({state})")

    reply = wait_for(
        f"auto-reply with ticket number {number} in the customer's mailbox",
        args.timeout,
        lambda: customer_mail_with(env, number),
    )
    print(f"3. the auto-reply reached {env['DEMO_CUSTOMER']}:")
    for header in ("From", "Subject", "Auto-Submitted", "In-Reply-To"):
        print(f"     {header}: {reply.get(header, '-')}")
    body = reply.get_body(preferencelist=("plain", "html"))
    first = body.get_content().strip().splitlines()[0] if body else ""
    print(f"     | {first}")

    answer_subject = f"Re: {reply['Subject']}"
    print(f"4. the customer answers: {answer_subject!r}")
    send(env, answer_subject, "It is out now, but it smells. Thanks!\n", in_reply_to=reply["Message-ID"])

    followed = wait_for(
        f"follow-up on ticket {number}",
        args.timeout,
        lambda: (t := ticket_of(db, answer_subject)) and t[0] == number and t,
    )
    print(f"5. the reply became a follow-up on the same ticket {followed[0]}: it now has {followed[3]} articles")
    print("demo: done")


if __name__ == "__main__":
    main()
