"""Result stores: one interface (``ResultStore``), DynamoDB and embedded-warehouse implementations."""
