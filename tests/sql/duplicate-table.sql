-- The same table twice.
CREATE TABLE out_t (txn_id STRING, amount_cents BIGINT) WITH ('connector' = 'blackhole');
CREATE TABLE out_t (txn_id STRING, amount_cents BIGINT) WITH ('connector' = 'blackhole');
