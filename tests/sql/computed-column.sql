-- A computed column other than the event time.
CREATE TABLE t (s STRING, u AS UPPER(s)) WITH ('connector' = 'blackhole');
