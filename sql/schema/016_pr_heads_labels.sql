-- The PR's label names as the newest pull_request webhook gave them (each webhook carries the full list):
-- the comment tells "add the label ciflow/crcr/<device>" apart from "the label is on, waiting for the
-- backend". Untrusted text (anyone with triage rights labels a PR), bounded by the handler. View
-- oot_pr_rows (014) reads it; a parameterized view is not resolved when created, so 014 may name the column
-- before this file adds it to an older table.
ALTER TABLE oot_pr_heads ADD COLUMN IF NOT EXISTS labels Array(String) DEFAULT []
