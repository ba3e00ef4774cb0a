"""Full + incremental backups restore to exactly the rows the source had at each point."""

from __future__ import annotations

import sample_data
from db_fixtures import settings_for

from aiplatform_ops.backup.database import take_database_backup
from aiplatform_ops.restore.database import binlog_segments, load_full_backup, replay_binlogs


def restore_chain(target, store, chain, source_db, scratch_db):
    full = chain[0]
    target.query(f"DROP DATABASE IF EXISTS `{scratch_db}`")
    load_full_backup(target, store.backup_dir(full.backup_id), full, database_map={source_db: scratch_db})
    segments = binlog_segments([(store.backup_dir(m.backup_id), m) for m in chain[1:]])
    replay_binlogs(target, segments, databases=[source_db], database_map={source_db: scratch_db})


def test_full_then_incrementals_restore_every_row(platform_db, db_store):
    target, db = platform_db
    settings = settings_for(db)
    full = take_database_backup(target, db_store, settings)
    assert full.type == "full"
    at_full = sample_data.table_fingerprints(target, db)
    assert full.details["tables"][f"{db}.ai_training_log"] == at_full["ai_training_log"][0]

    sample_data.change_rows(target, db, 0.05, tag="first")
    sample_data.run_sql(target, "CREATE TABLE ai_model (id INT PRIMARY KEY, name VARCHAR(64));"
                                "INSERT INTO ai_model VALUES (1, 'resnet'), (2, 'bert');", db)
    first = take_database_backup(target, db_store, settings)
    assert first.type == "incremental" and first.parent_id == full.backup_id
    at_first = sample_data.table_fingerprints(target, db)

    sample_data.change_rows(target, db, 0.05, tag="second")
    second = take_database_backup(target, db_store, settings)
    assert second.type == "incremental" and second.parent_id == first.backup_id
    at_second = sample_data.table_fingerprints(target, db)
    assert at_second != at_first != at_full

    scratch = f"{db}_restored"
    try:
        restore_chain(target, db_store, [full], db, scratch)
        assert sample_data.table_fingerprints(target, scratch) == at_full
        restore_chain(target, db_store, [full, first], db, scratch)
        assert sample_data.table_fingerprints(target, scratch) == at_first
        restore_chain(target, db_store, [full, first, second], db, scratch)
        assert sample_data.table_fingerprints(target, scratch) == at_second
    finally:
        target.query(f"DROP DATABASE IF EXISTS `{scratch}`")
