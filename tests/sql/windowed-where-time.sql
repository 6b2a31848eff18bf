-- WHERE in a windowed query filters on columns, not on the time attribute.
CREATE TABLE payments (
  account_id BIGINT,
  amount_cents BIGINT,
  ts BIGINT,
  rt AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rt AS rt - INTERVAL '2' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${EDDY_INPUT}', 'format' = 'json');
CREATE TABLE out_t (account_id BIGINT, n BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO out_t SELECT account_id, COUNT(*)
FROM TABLE(TUMBLE(TABLE payments, DESCRIPTOR(rt), INTERVAL '10' SECOND))
WHERE amount_cents > 100 AND rt > TIMESTAMP '2024-01-01 00:00:00'
GROUP BY window_start, window_end, account_id;
