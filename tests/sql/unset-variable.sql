-- ${NOPE} is not set.
CREATE TABLE t (a BIGINT) WITH ('connector' = 'filesystem', 'path' = '${NOPE}/out.csv', 'format' = 'csv');
