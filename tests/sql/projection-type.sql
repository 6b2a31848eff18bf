-- A computed column's type must fit the sink column it is written to.
CREATE TABLE payments (
  txn_id STRING,
  account_id BIGINT,
  amount_cents BIGINT,
  country STRING,
  ts BIGINT,
  rt AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rt AS rt - INTERVAL '2' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${EDDY_INPUT}', 'format' = 'json');
CREATE TABLE out_t (txn_id STRING, doubled STRING) WITH ('connector' = 'blackhole');
INSERT INTO out_t SELECT txn_id, amount_cents * 2 AS doubled FROM payments;
