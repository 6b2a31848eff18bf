"""The independent client reading what Eddy wrote: every message of a Kafka topic, from the start
of each partition to its high watermark when called, read with confluent-kafka (which ships its
own librdkafka build) as a plain consumer (read_uncommitted, no group commits).

Usage: consume.py BROKERS TOPIC

Prints one JSON line per message, in (partition, offset) order:
{"partition": int, "offset": int, "key": str|null, "value": str, "headers": [[name, value], ...]}
Keys, values and header values are decoded as UTF-8. Exits non-zero if the end is not reached
within a minute.
"""

import json
import sys
import time

from confluent_kafka import Consumer, TopicPartition


def text(data):
    return None if data is None else data.decode("utf-8")


def main():
    brokers, topic = sys.argv[1], sys.argv[2]
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": "eddy-tests-python-reader",
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",
        }
    )
    partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    ends = {}
    for p in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
        if high > low:
            ends[p] = high
    consumer.assign([TopicPartition(topic, p, 0) for p in ends])
    read = {p: 0 for p in ends}
    messages = []
    deadline = time.monotonic() + 60
    while any(read[p] < ends[p] for p in ends):
        if time.monotonic() > deadline:
            sys.exit(f"reading {topic}: still short of the end {ends} at {read}")
        message = consumer.poll(0.1)
        if message is None:
            continue
        if message.error():
            sys.exit(f"reading {topic}: {message.error()}")
        p, offset = message.partition(), message.offset()
        if offset >= ends[p]:
            continue
        read[p] = offset + 1
        messages.append(
            {
                "partition": p,
                "offset": offset,
                "key": text(message.key()),
                "value": text(message.value()),
                "headers": [[k, text(v)] for k, v in (message.headers() or [])],
            }
        )
    consumer.close()
    messages.sort(key=lambda m: (m["partition"], m["offset"]))
    for m in messages:
        print(json.dumps(m))


if __name__ == "__main__":
    main()
