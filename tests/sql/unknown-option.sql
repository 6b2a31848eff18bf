-- A misspelt option.
CREATE TABLE t (a BIGINT) WITH ('connector' = 'filesystem', 'paht' = 'x.csv', 'format' = 'csv');
