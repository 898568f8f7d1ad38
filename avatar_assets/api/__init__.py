"""The job API (`avatarops serve`): product backends upload avatars, request renders and follow them over HTTP.

It writes into the same inbox and request store the sensors read and reads state from the Dagster instance;
Dagster stays the engine. Its own state (tokens, idempotency keys) lives in `state.py`'s database.
"""
