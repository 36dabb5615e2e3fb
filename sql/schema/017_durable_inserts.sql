-- The embedded store answers a result once its journal line is fdatasynced, and deletes a journal segment
-- once the segment's rows are inserted here: from then on these tables are the only copy, so an insert must
-- be on stable storage when it returns (ClickHouse's default leaves a new part in the page cache). Every
-- insert into oot_job_results also writes a part of oot_summary_legs (its materialized view). Merged parts
-- are not fsynced; their source parts stay on disk for old_parts_lifetime (8 minutes), ClickHouse's own
-- guard against losing a merge's output to a power cut. Costs a few ms per insert, one insert per 500 ms.
ALTER TABLE oot_job_results MODIFY SETTING fsync_after_insert = 1, fsync_part_directory = 1;
ALTER TABLE oot_summary_legs MODIFY SETTING fsync_after_insert = 1, fsync_part_directory = 1
