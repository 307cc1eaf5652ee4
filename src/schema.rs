//! Diesel's view of the tables created by `migrations/`.

diesel::table! {
    logs (id) {
        id -> Int8,
        timestamp -> Timestamptz,
        #[max_length = 32]
        log_type -> Varchar,
        #[max_length = 16]
        level -> Varchar,
        job_id -> Int8,
        device_id -> Nullable<Int8>,
        #[max_length = 64]
        source -> Nullable<Varchar>,
        message -> Text,
        meta -> Nullable<Jsonb>,
        seq -> Int8,
    }
}

diesel::table! {
    job_streams (job_id) {
        job_id -> Int8,
        last_seq -> Int8,
    }
}

diesel::table! {
    ingest_requests (idempotency_key) {
        #[max_length = 255]
        idempotency_key -> Varchar,
        body_sha256 -> Bytea,
        acks -> Jsonb,
        created_at -> Timestamptz,
    }
}
