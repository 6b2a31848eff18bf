-- UPPER, LOWER, COALESCE and CHAR_LENGTH in WHERE, NULL where their arguments are.
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
CREATE TABLE german (txn_id STRING, country STRING)
WITH ('connector' = 'filesystem', 'path' = '${EDDY_OUTPUT}/german.jsonl', 'format' = 'json');
CREATE TABLE not_us (txn_id STRING, country STRING)
WITH ('connector' = 'filesystem', 'path' = '${EDDY_OUTPUT}/not_us.jsonl', 'format' = 'json');
CREATE TABLE defaulted (txn_id STRING, amount_cents BIGINT)
WITH ('connector' = 'filesystem', 'path' = '${EDDY_OUTPUT}/defaulted.jsonl', 'format' = 'json');
CREATE TABLE merchants (txn_id STRING, merchant STRING)
WITH ('connector' = 'filesystem', 'path' = '${EDDY_OUTPUT}/merchants.jsonl', 'format' = 'json');
-- t2 and t8: case does not matter.
INSERT INTO german SELECT txn_id, country FROM payments WHERE UPPER(country) = 'DE';
-- t2, t3, t5 and t8: NOT of NULL is NULL, so t6 and t7 (no country) are in neither.
INSERT INTO not_us SELECT txn_id, country FROM payments WHERE NOT (LOWER(country) = 'us');
-- t4, t5 and t7: a NULL amount counts as 0, and a NULL country as the merchant upper-cased
-- (t7), or else 'XX'.
INSERT INTO defaulted SELECT txn_id, amount_cents FROM payments
WHERE COALESCE(amount_cents, 0) < 1000 AND COALESCE(country, UPPER(merchant), 'XX') <> 'DE';
-- t1, t5 and t7: by characters, not bytes, upper-cased in full ('ß' is 'SS');
-- t3 and t4, without a merchant, have none.
INSERT INTO merchants SELECT txn_id, merchant FROM payments
WHERE CHAR_LENGTH(UPPER(merchant)) IN (5, 6, 8) AND LOWER(merchant) <> 'kiosk' AND UPPER(merchant) <> 'SHOP'
   OR UPPER(merchant) = 'STRASSE';
