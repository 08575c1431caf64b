#!/usr/bin/env python3
"""Real mail clients for the end-to-end tests (standard library + pika).

  mailer.py send HOST PORT FROM TO SUBJECT [IN_REPLY_TO]
      One mail through SMTP (Postfix's port 25, no auth: local domains only). Prints its
      Message-ID.
  mailer.py bulk HOST PORT FROM TO PREFIX COUNT
      COUNT mails over one SMTP session, subjects "PREFIX <n>". Prints the count sent.
  mailer.py bot HOST SMTP_PORT IMAPS_PORT CA USER PASSWORD IDLE_SECONDS
      A badly behaved desk: answers every new mail in USER's INBOX with a mail that has a new
      subject and no Auto-Submitted / Precedence header (the kind of autoresponder that
      starts mail loops), until no new mail came for IDLE_SECONDS. Prints how many it
      answered.
  mailer.py job AMQP_URL PREFIX JSON
      An integrator's agent answer: publishes the outbound job JSON with pika (persistent,
      confirmed, mandatory) to PREFIX.outbound / mail.send.
"""
import email
import email.policy
import email.utils
import imaplib
import json
import smtplib
import ssl
import sys
import time
from email.message import EmailMessage


def make(sender, to, subject, body, in_reply_to=None, domain="client.test"):
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg["Message-ID"] = email.utils.make_msgid(domain=domain)
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg.set_content(body)
    return msg


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "send":
        host, port, sender, to, subject = args[:5]
        msg = make(sender, to, subject, "Hello,\n\nplease help.\n", args[5] if len(args) > 5 else None)
        with smtplib.SMTP(host, int(port), timeout=30) as smtp:
            smtp.send_message(msg)
        print(msg["Message-ID"])
    elif cmd == "bulk":
        host, port, sender, to, prefix, count = args
        with smtplib.SMTP(host, int(port), timeout=60) as smtp:
            for n in range(int(count)):
                smtp.send_message(make(sender, to, f"{prefix} {n}", f"Mail number {n}.\n"))
        print(count)
    elif cmd == "bot":
        host, smtp_port, imaps_port, ca, user, password, idle = args
        ctx = ssl.create_default_context(cafile=ca)
        answered = 0
        last_mail = time.monotonic()
        while time.monotonic() - last_mail < float(idle):
            with imaplib.IMAP4_SSL(host, int(imaps_port), ssl_context=ctx) as imap:
                imap.login(user, password)
                imap.select("INBOX")
                _, data = imap.search(None, "UNSEEN")
                for num in data[0].split():
                    _, parts = imap.fetch(num, "(RFC822)")
                    got = email.message_from_bytes(parts[0][1], policy=email.policy.default)
                    reply = make(user, got["From"], f"Thank you for your message ({answered})",
                                 "We got your mail and will answer soon.\n", domain=user.split("@")[1])
                    with smtplib.SMTP(host, int(smtp_port), timeout=30) as smtp:
                        smtp.send_message(reply)
                    answered += 1
                    last_mail = time.monotonic()
            time.sleep(0.5)
        print(answered)
    elif cmd == "job":
        import pika

        url, prefix, body = args
        job = json.loads(body)
        conn = pika.BlockingConnection(pika.URLParameters(url))
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(
            exchange=f"{prefix}.outbound",
            routing_key="mail.send",
            body=json.dumps(job).encode("utf-8"),
            properties=pika.BasicProperties(
                content_type="application/json",
                delivery_mode=pika.DeliveryMode.Persistent,
                message_id=job["job_id"],
            ),
            mandatory=True,
        )
        conn.close()
        print("published", job["job_id"])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
