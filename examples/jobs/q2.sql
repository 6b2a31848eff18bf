-- Q2 of the common workload (../shared/bench/QUERIES.md) in Flink SQL: hopping 60 s windows
-- sliding by 10 s per account, where count >= 6; the same job as q2.toml.
-- EDDY_INPUT=txn.jsonl EDDY_OUTPUT=q2.csv eddy run examples/jobs/q2.sql -w 2

SET 'table.local-time-zone' = 'UTC';

CREATE TABLE transactions (
  txn_id STRING,
  account_id BIGINT,
  amount_cents BIGINT,
  merchant STRING,
  country STRING,
  ts BIGINT,
  rt AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rt AS rt - INTERVAL '2' SECOND
) WITH (
  'connector' = 'filesystem',
  'path' = '${EDDY_INPUT}',
  'format' = 'json'
);

CREATE TABLE q2 (
  account_id BIGINT,
  window_start BIGINT,
  `count` BIGINT,
  `sum` BIGINT
) WITH (
  'connector' = 'filesystem',
  'path' = '${EDDY_OUTPUT}',
  'format' = 'csv'
);

INSERT INTO q2
SELECT
  account_id,
  CAST(TIMESTAMPDIFF(SECOND, TIMESTAMP '1970-01-01 00:00:00', window_start) AS BIGINT) * 1000 AS window_start,
  COUNT(*) AS `count`,
  SUM(amount_cents) AS `sum`
FROM TABLE(HOP(TABLE transactions, DESCRIPTOR(rt), INTERVAL '10' SECOND, INTERVAL '60' SECOND))
GROUP BY account_id, window_start, window_end
HAVING COUNT(*) >= 6;
