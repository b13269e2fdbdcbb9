-- A job being pruned: its rows go in short transactions, and nothing may
-- bring it back to life (pcd retry) halfway.
ALTER TABLE jobs ADD COLUMN pruning INTEGER NOT NULL DEFAULT 0;
