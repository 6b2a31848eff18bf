-- A HOP window of 3600 panes.
CREATE TABLE p (a BIGINT, ts BIGINT, rt AS TO_TIMESTAMP_LTZ(ts, 3), WATERMARK FOR rt AS rt)
WITH ('connector' = 'filesystem', 'path' = 'in.jsonl', 'format' = 'json');
CREATE TABLE o (a BIGINT, n BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO o SELECT a, COUNT(*)
FROM TABLE(HOP(TABLE p, DESCRIPTOR(rt), INTERVAL '1' SECOND, INTERVAL '1' HOUR))
GROUP BY window_start, window_end, a;
