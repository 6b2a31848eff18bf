-- An empty path.
CREATE TABLE p (a BIGINT, ts BIGINT, rt AS TO_TIMESTAMP_LTZ(ts, 3), WATERMARK FOR rt AS rt)
WITH ('connector' = 'filesystem', 'path' = 'in.jsonl', 'format' = 'json');
CREATE TABLE o (a BIGINT) WITH ('connector' = 'filesystem', 'path' = ' ', 'format' = 'json');
INSERT INTO o SELECT a FROM p;
