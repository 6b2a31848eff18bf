-- A filesystem table without a path.
CREATE TABLE t (a BIGINT) WITH ('connector' = 'filesystem', 'format' = 'csv');
