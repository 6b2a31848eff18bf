-- A query without FROM.
CREATE TABLE t (a BIGINT) WITH ('connector' = 'print');
INSERT INTO t SELECT 1;
