"""The relay's write path: payload extraction, auth, size cap, rate limit, and the result stores."""
