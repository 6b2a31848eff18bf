-- A statement set that never ends.
CREATE TABLE t (a BIGINT) WITH ('connector' = 'blackhole');
EXECUTE STATEMENT SET BEGIN
