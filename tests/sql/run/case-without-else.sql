-- CASE without ELSE is NULL where no WHEN holds, and a condition on NULL does not hold.
CREATE TABLE payments (
  txn_id STRING,
  account_id BIGINT,
  amount_cents BIGINT,
  country STRING,
  ts BIGINT,
  rt AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rt AS rt - INTERVAL '2' SECOND
) WITH ('connector' = 'filesystem', 'path' = 'input.jsonl', 'format' = 'json');
CREATE TABLE us (txn_id STRING, amount_cents BIGINT)
WITH ('connector' = 'filesystem', 'path' = '${EDDY_OUTPUT}/us.jsonl', 'format' = 'json');
CREATE TABLE large (txn_id STRING, country STRING)
WITH ('connector' = 'filesystem', 'path' = '${EDDY_OUTPUT}/large.jsonl', 'format' = 'json');
CREATE TABLE unmatched (txn_id STRING)
WITH ('connector' = 'filesystem', 'path' = '${EDDY_OUTPUT}/unmatched.jsonl', 'format' = 'json');
-- t1 only: the other countries are lower case, NULL or missing.
INSERT INTO us SELECT txn_id, amount_cents FROM payments WHERE CASE WHEN country = 'US' THEN TRUE END;
-- t1, t3, t6 and t8: a doubled amount over 150000, where the CASE is not NULL.
INSERT INTO large SELECT txn_id, country FROM payments
WHERE CASE country WHEN 'US' THEN amount_cents WHEN 'FR' THEN amount_cents * 2 END > 150000
   OR CASE WHEN country IS NULL THEN amount_cents WHEN amount_cents > 100000 THEN 2 * amount_cents END > 50000;
-- The records no WHEN takes: the CASE IS NULL (t2, t4, t5, t6, t7; t3 is FR).
INSERT INTO unmatched SELECT txn_id FROM payments
WHERE CASE WHEN country IN ('US', 'FR', 'De') THEN country END IS NULL;
