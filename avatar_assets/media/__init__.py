"""Pure media functions: images, audio, video and QA metrics. No dagster import here."""
