"""JSON record IO manager: assets return small pydantic records; media stays in the MediaStore.

Records are laid out per avatar so that everything derived from one avatar sits under one prefix
(`resources.layout.record_key`).
"""


import json

import dagster as dg

from avatar_assets.contracts import RECORD_TYPES, Record
from partitions import split_cell
from resources.layout import record_key, tombstone_key
from resources.media_store import MediaStore


def dump_record(record: Record) -> str:
    return json.dumps({"kind": record.kind, "record": record.model_dump(mode="json")}, indent=2)


def parse_record(text: str) -> Record:
    document = json.loads(text)
    return RECORD_TYPES[document["kind"]].model_validate(document["record"])


def read_record(store: MediaStore, asset_name: str, partition_key: str) -> Record | None:
    text = store.read_text(record_key(asset_name, partition_key))
    return parse_record(text) if text is not None else None


class RecordIOManager(dg.ConfigurableIOManager):
    """One JSON record per partition. A ranged run (`BackfillPolicy.multi_run`) hands over and receives
    {partition: record} dicts that cover exactly the run's partitions."""

    store: MediaStore

    def handle_output(self, context: dg.OutputContext, obj: Record | dict[str, Record]) -> None:
        keys = [str(k) for k in context.asset_partition_keys] if context.has_asset_partitions else []
        records = obj if isinstance(obj, dict) else {str(context.asset_partition_key): obj}
        if sorted(records) != sorted(keys):
            raise ValueError(
                f"{context.asset_key.to_user_string()} returned records for {sorted(records)}, "
                f"but the run materializes {sorted(keys)}"
            )
        for record in records.values():
            if not isinstance(record, Record):
                raise TypeError(f"{context.asset_key.to_user_string()} returned {type(record).__name__}, not a Record")
        for partition_key in records:
            avatar_id, _ = split_cell(partition_key)
            if self.store.read_text(tombstone_key(avatar_id)) is not None:
                raise dg.Failure(f"avatar {avatar_id} was revoked; its records are not written", allow_retries=False)
        written = {}
        for partition_key, record in records.items():
            key = record_key(context.asset_key.path[-1], partition_key)
            self.store.write_text(key, dump_record(record))
            written[partition_key] = key
        if len(written) == 1:
            context.add_output_metadata({"record": dg.MetadataValue.path(self.store.uri(next(iter(written.values()))))})

    def load_input(self, context: dg.InputContext) -> Record | dict[str, Record]:
        asset_name = context.upstream_output.asset_key.path[-1]
        keys = [str(k) for k in context.asset_partition_keys]
        records = {key: self._load(asset_name, key) for key in keys}
        return records if len(records) > 1 else records[keys[0]]

    def _load(self, asset_name: str, partition_key: str) -> Record:
        key = record_key(asset_name, partition_key)
        text = self.store.read_text(key)
        if text is None:
            raise FileNotFoundError(f"no record for {asset_name} partition {partition_key} at {key}")
        return parse_record(text)
