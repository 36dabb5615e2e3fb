-- Records the replicator could not convert or route: kept whole, with the reason, for a human to replay.
CREATE TABLE IF NOT EXISTS oot_dead_letters
(
    received_at   DateTime64(3, 'UTC'),
    source_table  String,
    event_id      String,
    sequence      String,
    reason        String,
    raw           String
)
ENGINE = MergeTree
ORDER BY (received_at, source_table)
