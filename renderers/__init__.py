"""Pure renderers: query rows in, Markdown / HTML / JSON text out. No I/O here."""
