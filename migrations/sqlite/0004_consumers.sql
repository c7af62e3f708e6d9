-- What each durable consumer of the event stream has applied, per folder.
-- A consumer writes its effect and advances this row in one transaction,
-- and commits its Kafka offset only afterwards: an event delivered again
-- (after a crash between the two) is recognised by its seq and skipped.
CREATE TABLE consumer_marks (
    namespace_id  BIGINT NOT NULL,
    consumer      TEXT NOT NULL,
    seq           BIGINT NOT NULL,            -- highest journal seq applied
    applied       BIGINT NOT NULL,            -- events applied (lag figures)
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (namespace_id, consumer)
);
