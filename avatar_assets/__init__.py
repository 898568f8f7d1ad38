"""Avatar production platform: Dagster assets from upload to packaged video."""
