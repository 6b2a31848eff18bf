-- A doubled comma in a column list.
CREATE TABLE t (a BIGINT,, b INT) WITH ('connector' = 'blackhole');
