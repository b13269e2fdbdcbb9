-- Callback delivery to command hooks and webhooks.

-- A job's own sinks, as JSON: {"on_task": CMD, "on_job": CMD, "webhook": URL}.
ALTER TABLE jobs ADD COLUMN sinks TEXT;

-- Each sink delivers the callbacks it takes in id order; its cursor is the
-- last one it is done with (delivered, or dead after its attempts).
CREATE TABLE sink_cursors (
    sink    TEXT    PRIMARY KEY,
    last_id INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- The delivery state of a callback at a sink, from its first attempt on.
CREATE TABLE deliveries (
    callback_id  INTEGER NOT NULL REFERENCES callbacks (id),
    sink         TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('retrying', 'delivered', 'dead')),
    attempts     INTEGER NOT NULL,
    last_error   TEXT,
    delivered_at INTEGER,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (callback_id, sink)
) WITHOUT ROWID;
