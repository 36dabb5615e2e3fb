-- The GitHub App's installation per repository (installation / installation_repositories webhooks), so
-- the bot can write to a PR after a restart without asking GitHub. Newest update wins; removed = 1 when
-- the App was uninstalled from the repository.
CREATE TABLE IF NOT EXISTS oot_installations
(
    repo             String,
    installation_id  UInt64,
    account          String,
    removed          UInt8,
    updated_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY repo
