-- A source without a watermark.
CREATE TABLE p (txn_id STRING, amount_cents BIGINT) WITH ('connector' = 'filesystem', 'path' = 'in.jsonl', 'format' = 'json');
CREATE TABLE out_t (txn_id STRING, amount_cents BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO out_t SELECT * FROM p;
