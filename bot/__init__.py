"""The GitHub App: webhook receiver, handlers, githubkit client and the per-PR writer (docs/bot.md)."""
