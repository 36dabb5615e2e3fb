-- The PR's title and author (user.login) as the newest pull_request webhook gave them, for the pages: no
-- GitHub call on a page view. Untrusted text (anyone can open a PR): escaped wherever shown.
ALTER TABLE oot_pr_heads ADD COLUMN IF NOT EXISTS title String DEFAULT '';
ALTER TABLE oot_pr_heads ADD COLUMN IF NOT EXISTS author String DEFAULT ''
