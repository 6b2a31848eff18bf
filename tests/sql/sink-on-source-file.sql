-- The sink writes the file the source reads.
CREATE TABLE p (a BIGINT, ts BIGINT, rt AS TO_TIMESTAMP_LTZ(ts, 3), WATERMARK FOR rt AS rt)
WITH ('connector' = 'filesystem', 'path' = 'in.jsonl', 'format' = 'json');
CREATE TABLE o (a BIGINT) WITH ('connector' = 'filesystem', 'path' = './in.jsonl', 'format' = 'json');
INSERT INTO o SELECT a FROM p;
