"""The independent client of Eddy's real-broker tests: produces messages into a Kafka topic with
confluent-kafka (which ships its own librdkafka build), so that Eddy's decoding is checked against
bytes that Eddy's code did not write.

Usage: produce.py BROKERS TOPIC INPUT PER_SECOND

INPUT holds JSON lines, each {"key": str|null, "partition": int|null, "timestamp": ms|null} with
either "value", a JSON object encoded here (sorted keys, Python's separators: not the byte layout
Eddy's serde_json writes), or "raw", a string sent as it is. PER_SECOND paces the messages; 0
sends them as fast as the client takes them. Prints `produced N` as messages are handed to the
client and once all are delivered; exits non-zero if any delivery failed.
"""

import json
import sys
import time

from confluent_kafka import Producer


def main():
    brokers, topic, path, per_second = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    producer = Producer(
        {"bootstrap.servers": brokers, "enable.idempotence": True, "linger.ms": 5}
    )
    failures = []

    def delivered(err, msg):
        if err is not None:
            failures.append(f"{msg.topic()}/{msg.partition()}: {err}")

    started = time.monotonic()
    sent = 0
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            message = json.loads(line)
            if "raw" in message:
                value = message["raw"].encode()
            else:
                value = json.dumps(message["value"], sort_keys=True).encode()
            options = {"on_delivery": delivered}
            if message.get("key") is not None:
                options["key"] = message["key"].encode()
            if message.get("partition") is not None:
                options["partition"] = message["partition"]
            if message.get("timestamp") is not None:
                options["timestamp"] = message["timestamp"]
            if per_second > 0:
                due = started + sent / per_second
                while (left := due - time.monotonic()) > 0:
                    producer.poll(left)
            while True:
                try:
                    producer.produce(topic, value, **options)
                    break
                except BufferError:
                    producer.poll(0.005)
            producer.poll(0)
            sent += 1
            if sent % 100 == 0:
                print(f"produced {sent}", flush=True)
    left = producer.flush(60)
    if left or failures:
        sys.exit(f"{left} messages undelivered, {len(failures)} failed: {failures[:5]}")
    print(f"produced {sent}", flush=True)


if __name__ == "__main__":
    main()
