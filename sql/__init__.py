"""The warehouse: schema, the job record every part shares, and saved queries."""
