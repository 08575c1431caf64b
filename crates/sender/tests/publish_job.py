#!/usr/bin/env python3
"""An integrator's view: publish one outbound job to deskmail with pika.

usage: publish_job.py AMQP_URL PREFIX JOB_ID TO

The job is JSON (proto/outbound-job.schema.json), published persistent to <PREFIX>.outbound
with routing key mail.send, message_id = job_id, with publisher confirms and mandatory
routing so an unroutable job is an error, not a silent loss.
"""
import json
import sys

import pika

url, prefix, job_id, to = sys.argv[1:5]
job = {
    "job_id": job_id,
    "correlation_id": "python-corr-1",
    "to": [to],
    "subject": "Hallo aus Python ✓",
    "text": "This job was published with pika.",
}
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
        message_id=job_id,
        correlation_id=job["correlation_id"],
    ),
    mandatory=True,
)
conn.close()
print("published", job_id)
