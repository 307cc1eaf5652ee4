DROP TABLE job_streams;
DROP TABLE logs;
