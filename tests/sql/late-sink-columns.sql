-- The late records' table has a column the source has not.
CREATE TABLE payments (
  account_id BIGINT,
  ts BIGINT,
  rt AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rt AS rt
) WITH ('connector' = 'filesystem', 'path' = '${EDDY_INPUT}', 'format' = 'json',
        'eddy.late-sink' = 'late');
CREATE TABLE late (account_id BIGINT, reason STRING) WITH ('connector' = 'print');
CREATE TABLE counts (account_id BIGINT, n BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO counts SELECT account_id, COUNT(*)
FROM TABLE(TUMBLE(TABLE payments, DESCRIPTOR(rt), INTERVAL '1' MINUTE))
GROUP BY window_start, window_end, account_id;
