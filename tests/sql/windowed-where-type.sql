-- WHERE in a windowed query is a BOOLEAN condition on the table's columns.
CREATE TABLE payments (
  account_id BIGINT,
  country STRING,
  amount_cents BIGINT,
  ts BIGINT,
  rt AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rt AS rt - INTERVAL '2' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${EDDY_INPUT}', 'format' = 'json');
CREATE TABLE out_t (account_id BIGINT, n BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO out_t SELECT account_id, COUNT(*)
FROM TABLE(HOP(TABLE payments, DESCRIPTOR(rt), INTERVAL '5' SECOND, INTERVAL '10' SECOND))
WHERE amount_cents + 1
GROUP BY window_start, window_end, account_id;
