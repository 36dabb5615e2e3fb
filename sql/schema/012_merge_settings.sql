-- Ingest writes many small parts (one per commit group). By default the merge selector merges two or three
-- parts at a time, so the big part of a partition is rewritten every few inserts: merge work grows with the
-- table and competes with ingest for the CPU. Waiting for ten parts cuts that work ~10x (bench/ingest.py,
-- docs/ingest.md); reads pay a little for the few more parts FINAL has to collapse.
ALTER TABLE oot_job_results MODIFY SETTING min_parts_to_merge_at_once = 10;
ALTER TABLE oot_summary_legs MODIFY SETTING min_parts_to_merge_at_once = 10
