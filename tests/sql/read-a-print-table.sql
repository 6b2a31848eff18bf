-- A print table read as a source.
CREATE TABLE counts (account_id BIGINT, window_start BIGINT, n BIGINT)
WITH ('connector' = 'print');
CREATE TABLE out_t (txn_id STRING, amount_cents BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO out_t SELECT * FROM counts;
