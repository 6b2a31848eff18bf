-- Session bounds are not whole seconds.
CREATE TABLE payments (
  account_id BIGINT,
  ts BIGINT,
  rt AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rt AS rt
) WITH ('connector' = 'filesystem', 'path' = '${EDDY_INPUT}', 'format' = 'json');
CREATE TABLE sessions (account_id BIGINT, window_start BIGINT, n BIGINT)
WITH ('connector' = 'print');
INSERT INTO sessions
SELECT account_id, CAST(TIMESTAMPDIFF(SECOND, TIMESTAMP '1970-01-01 00:00:00', window_start) AS BIGINT) * 1000, COUNT(*)
FROM TABLE(SESSION(TABLE payments, DESCRIPTOR(rt), INTERVAL '30' SECOND))
GROUP BY account_id, window_start, window_end;
