-- A temporal (lookup) join.
CREATE TABLE orders (id BIGINT, currency STRING, ts BIGINT, rt AS TO_TIMESTAMP_LTZ(ts, 3), WATERMARK FOR rt AS rt)
WITH ('connector' = 'filesystem', 'path' = 'in.jsonl', 'format' = 'json');
CREATE TABLE rates (currency STRING, rate DOUBLE) WITH ('connector' = 'blackhole');
CREATE TABLE o (id BIGINT, rate DOUBLE) WITH ('connector' = 'blackhole');
INSERT INTO o SELECT o.id, r.rate FROM orders AS o
JOIN rates FOR SYSTEM_TIME AS OF o.rt AS r ON o.currency = r.currency;
