-- country is neither grouped nor aggregated.
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
SELECT country, CAST(TIMESTAMPDIFF(SECOND, TIMESTAMP '1970-01-01 00:00:00', window_start) AS BIGINT) * 1000, COUNT(*)
FROM TABLE(TUMBLE(TABLE payments, DESCRIPTOR(rt), INTERVAL '60' SECOND))
GROUP BY account_id, window_start, window_end;
