-- Answers to ingest requests that carried an Idempotency-Key, so that a retry returns the
-- first answer and stores nothing twice. Written in the same transaction as the records.
CREATE TABLE ingest_requests (
    idempotency_key VARCHAR(255) PRIMARY KEY,
    -- SHA-256 of the request body: the same key with another body is refused.
    body_sha256     BYTEA       NOT NULL,
    -- The acknowledgements: [{"job_id":…,"id":…,"seq":…}, …]
    acks            JSONB       NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX ingest_requests_created_at_idx ON ingest_requests (created_at);
