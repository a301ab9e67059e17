"""The recipe document: parsing, migration, validation, schema and artifacts."""
