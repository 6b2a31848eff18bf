-- WHERE in windowed queries filters the records before the windows, as in Flink: the records of
-- windows.jsonl over 100 are counted, and of the two that come after the watermark passed
-- their TUMBLE window, w7 (400) is late but w6 (60), which WHERE drops, is not.
CREATE TABLE payments (
  txn_id STRING,
  account_id BIGINT,
  amount_cents BIGINT,
  ts BIGINT,
  rt AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rt AS rt - INTERVAL '2' SECOND
) WITH ('connector' = 'filesystem', 'path' = 'windows.jsonl', 'format' = 'json',
        'eddy.late-sink' = 'late');
CREATE TABLE late (txn_id STRING, amount_cents BIGINT)
WITH ('connector' = 'filesystem', 'path' = '${EDDY_OUTPUT}/late.jsonl', 'format' = 'json');
-- The same records, for the HOP and SESSION queries: a filesystem late sink takes one query's.
CREATE TABLE payments_again (
  txn_id STRING,
  account_id BIGINT,
  amount_cents BIGINT,
  ts BIGINT,
  rt AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rt AS rt - INTERVAL '2' SECOND
) WITH ('connector' = 'filesystem', 'path' = 'windows.jsonl', 'format' = 'json');
CREATE TABLE tumbling (account_id BIGINT, window_start BIGINT, n BIGINT, total BIGINT)
WITH ('connector' = 'filesystem', 'path' = '${EDDY_OUTPUT}/tumbling.jsonl', 'format' = 'json');
CREATE TABLE hopping (account_id BIGINT, window_start BIGINT, n BIGINT, total BIGINT)
WITH ('connector' = 'filesystem', 'path' = '${EDDY_OUTPUT}/hopping.jsonl', 'format' = 'json');
CREATE TABLE sessions (account_id BIGINT, n BIGINT, total BIGINT)
WITH ('connector' = 'filesystem', 'path' = '${EDDY_OUTPUT}/sessions.jsonl', 'format' = 'json');
-- [100 s, 110 s): w1 of account 1, w3 of account 2; then w4 and w8 of account 1.
INSERT INTO tumbling
SELECT account_id,
  CAST(TIMESTAMPDIFF(SECOND, TIMESTAMP '1970-01-01 00:00:00', window_start) AS BIGINT) * 1000,
  COUNT(*), SUM(amount_cents)
FROM TABLE(TUMBLE(TABLE payments, DESCRIPTOR(rt), INTERVAL '10' SECOND))
WHERE amount_cents > 100
GROUP BY window_start, window_end, account_id;
-- w7 counts in [105 s, 115 s), still open when it comes; w5 (80) in none.
INSERT INTO hopping
SELECT account_id,
  CAST(TIMESTAMPDIFF(SECOND, TIMESTAMP '1970-01-01 00:00:00', window_start) AS BIGINT) * 1000,
  COUNT(*), SUM(amount_cents)
FROM TABLE(HOP(TABLE payments_again, DESCRIPTOR(rt), INTERVAL '5' SECOND, INTERVAL '10' SECOND))
WHERE amount_cents > 100 AND account_id IN (1, 2)
GROUP BY window_start, window_end, account_id;
-- Without w2 and w6, account 1's records are more than 5 s apart: three sessions; w7 would
-- open account 2's closed session, so it is late there.
INSERT INTO sessions
SELECT account_id, COUNT(*), SUM(amount_cents)
FROM TABLE(SESSION(TABLE payments_again, DESCRIPTOR(rt), INTERVAL '5' SECOND))
WHERE NOT (amount_cents <= 100)
GROUP BY window_start, window_end, account_id;
