"""Dagster resources: the media store, the record IO manager and the capability providers."""
