-- A task callback's result is stored once, in its results row. The
-- callback's message is stored without its ',"result":…' member, and
-- result_at is the byte offset where the store puts it back when the
-- callback is read, so every reader gets the message as it was written.
-- NULL: the message is whole (rows written before this migration, and
-- callbacks without a result).
ALTER TABLE callbacks ADD COLUMN result_at INTEGER;
