-- window_start is a TIMESTAMP(3), the sink column a BIGINT.
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
SELECT account_id, window_start, COUNT(*)
FROM TABLE(TUMBLE(TABLE payments, DESCRIPTOR(rt), INTERVAL '60' SECOND))
GROUP BY account_id, window_start, window_end;
