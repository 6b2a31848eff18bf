-- A column of NULL has no type to write.
CREATE TABLE payments (
  txn_id STRING,
  account_id BIGINT,
  amount_cents BIGINT,
  country STRING,
  ts BIGINT,
  rt AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rt AS rt - INTERVAL '2' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${EDDY_INPUT}', 'format' = 'json');
CREATE TABLE out_t (txn_id STRING, country STRING) WITH ('connector' = 'blackhole');
INSERT INTO out_t SELECT txn_id, NULL FROM payments WHERE amount_cents > 0;
