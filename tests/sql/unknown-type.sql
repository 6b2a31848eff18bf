-- DECIMAL is not a supported type.
CREATE TABLE t (price DECIMAL(10, 2)) WITH ('connector' = 'blackhole');
