-- Q1 of the common workload (../shared/bench/QUERIES.md) in Flink SQL: tumbling 60 s windows
-- per account, the same job as q1.toml.
-- EDDY_INPUT=txn.jsonl EDDY_OUTPUT=q1.csv eddy run examples/jobs/q1.sql -w 2

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

CREATE TABLE q1 (
  account_id BIGINT,
  window_start BIGINT,
  window_end BIGINT,
  `count` BIGINT,
  `sum` BIGINT,
  `max` BIGINT
) WITH (
  'connector' = 'filesystem',
  'path' = '${EDDY_OUTPUT}',
  'format' = 'csv'
);

INSERT INTO q1
SELECT
  account_id,
  CAST(TIMESTAMPDIFF(SECOND, TIMESTAMP '1970-01-01 00:00:00', window_start) AS BIGINT) * 1000 AS window_start,
  CAST(TIMESTAMPDIFF(SECOND, TIMESTAMP '1970-01-01 00:00:00', window_end) AS BIGINT) * 1000 AS window_end,
  COUNT(*) AS `count`,
  SUM(amount_cents) AS `sum`,
  MAX(amount_cents) AS `max`
FROM TABLE(TUMBLE(TABLE transactions, DESCRIPTOR(rt), INTERVAL '60' SECOND))
GROUP BY account_id, window_start, window_end;
