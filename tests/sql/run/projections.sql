-- Computed columns without a window: arithmetic, CASE and functions, NULL where Flink's are.
CREATE TABLE payments (
  txn_id STRING,
  account_id BIGINT,
  amount_cents BIGINT,
  merchant STRING,
  country STRING,
  ts BIGINT,
  rt AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rt AS rt - INTERVAL '2' SECOND
) WITH ('connector' = 'filesystem', 'path' = 'input.jsonl', 'format' = 'json');
CREATE TABLE tiers (account_id BIGINT, doubled BIGINT, tier STRING, c STRING)
WITH ('connector' = 'filesystem', 'path' = '${EDDY_OUTPUT}/tiers.jsonl', 'format' = 'json');
CREATE TABLE amounts (txn_id STRING, amount BIGINT)
WITH ('connector' = 'filesystem', 'path' = '${EDDY_OUTPUT}/amounts.jsonl', 'format' = 'json');
CREATE TABLE merchants (txn_id STRING, merchant STRING, euros BIGINT, abroad BOOLEAN)
WITH ('connector' = 'filesystem', 'path' = '${EDDY_OUTPUT}/merchants.csv', 'format' = 'csv');
-- All but t8 (account 4): t5's NULL amount doubles to NULL and is not over 1000, so 'small';
-- t6's NULL country and t7's missing one upper-case to NULL.
INSERT INTO tiers
SELECT account_id, amount_cents * 2 AS doubled,
  CASE WHEN amount_cents > 1000 THEN 'big' ELSE 'small' END AS tier,
  UPPER(country) AS c
FROM payments WHERE account_id <> 4;
-- The records with an amount: a missing merchant is 'none'; abroad is NULL without a country.
INSERT INTO merchants
SELECT txn_id, COALESCE(LOWER(merchant), 'none'), amount_cents / 100, UPPER(country) <> 'US'
FROM payments WHERE amount_cents IS NOT NULL;
-- A column the sink names otherwise: written by position, as Flink inserts.
INSERT INTO amounts SELECT txn_id, amount_cents FROM payments;
