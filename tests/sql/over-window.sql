-- OVER aggregation.
CREATE TABLE payments (
  txn_id STRING,
  account_id BIGINT,
  amount_cents BIGINT,
  country STRING,
  ts BIGINT,
  rt AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rt AS rt - INTERVAL '2' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${EDDY_INPUT}', 'format' = 'json');
CREATE TABLE counts (account_id BIGINT, window_start BIGINT, n BIGINT)
WITH ('connector' = 'print');
INSERT INTO counts
SELECT account_id, ts, SUM(amount_cents) OVER (PARTITION BY account_id ORDER BY rt) FROM payments;
