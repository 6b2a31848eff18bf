-- The watermark on a BIGINT column.
CREATE TABLE t (ts BIGINT, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH ('connector' = 'blackhole');
