-- The index by address is rewritten contact by contact (`DELETE … WHERE pipeline_id AND
-- contact_id` before each contact's addresses are inserted again), and its primary key leads
-- with the address: without this index every such delete scanned the pipeline's whole index,
-- so a backfill's page commit grew with the pipeline (≈1.3 s a page at 15 000 contacts).
CREATE INDEX sync_index_emails_contact ON sync_index_emails (pipeline_id, contact_id);
