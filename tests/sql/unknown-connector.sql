-- The jdbc connector.
CREATE TABLE t (a BIGINT) WITH ('connector' = 'jdbc', 'url' = 'jdbc:x');
