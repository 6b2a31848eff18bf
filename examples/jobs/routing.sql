-- Content-based routing in Flink SQL, the routes of routing.toml over a JSON-lines file:
--   EDDY_INPUT=payments.jsonl eddy run examples/jobs/routing.sql
-- Each INSERT is a route: an event goes to every INSERT whose WHERE holds (fan-out). The
-- statement set runs them as one job reading the file once.

CREATE TABLE payments (
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

-- Large payments made abroad.
CREATE TABLE large_foreign (
  txn_id STRING,
  account_id BIGINT,
  amount_cents BIGINT,
  merchant STRING,
  country STRING,
  ts BIGINT
) WITH (
  'connector' = 'filesystem',
  'path' = '/tmp/eddy-sql-large-foreign.jsonl',
  'format' = 'json'
);

-- Euro-area payments of 20.00 or more; a large French payment is in both.
CREATE TABLE euro_area (
  txn_id STRING,
  account_id BIGINT,
  amount_cents BIGINT,
  merchant STRING,
  country STRING,
  ts BIGINT
) WITH (
  'connector' = 'filesystem',
  'path' = '/tmp/eddy-sql-euro-area.jsonl',
  'format' = 'json'
);

-- Whatever neither route above takes, three columns of it as CSV.
CREATE TABLE rest (
  txn_id STRING,
  country STRING,
  amount_cents BIGINT
) WITH (
  'connector' = 'filesystem',
  'path' = '/tmp/eddy-sql-rest.csv',
  'format' = 'csv'
);

EXECUTE STATEMENT SET
BEGIN
  INSERT INTO large_foreign
  SELECT * FROM payments WHERE amount_cents > 50000 AND country <> 'US';

  INSERT INTO euro_area
  SELECT * FROM payments
  WHERE country IN ('DE', 'FR', 'IT', 'ES', 'NL', 'BE', 'AT', 'IE', 'PT', 'FI')
    AND amount_cents >= 2000;

  INSERT INTO rest
  SELECT txn_id, country, amount_cents FROM payments
  WHERE NOT (amount_cents > 50000 AND country <> 'US')
    AND NOT (country IN ('DE', 'FR', 'IT', 'ES', 'NL', 'BE', 'AT', 'IE', 'PT', 'FI')
             AND amount_cents >= 2000);
END;
