-- What each host has loaded, so that `cairn plugins` and the dashboard can
-- show an operator which version of a plugin every running host serves (did
-- the reload take effect everywhere?).
--
-- A JSON array, one object per plugin file the host knows:
--   {"file": "greet.wasm", "digest": "<sha-256 hex>", "module": "greet",
--    "actions": ["hello"], "rejected": null}
-- `digest`, `module` and `actions` describe the version that serves (null
-- and [] when none does); `rejected` is null, or, when the file's latest
-- content was refused, {"digest": ..., "reason": "(<phase>) <why>"}.
-- Written by the host's worker with every heartbeat (the worker is the one
-- writer of a host's row: host/src/worker.rs), so it is current within a
-- heartbeat of any reload. Never holds config values or secrets.
ALTER TABLE cairn.hosts ADD COLUMN plugins jsonb NOT NULL DEFAULT '[]';

-- The host that ran (or runs) a row's latest attempt. `lease_owner` says it
-- only while the row is running; operators want to know where a failed row
-- failed. Set by the claim (0007's cairn.claim), in the UPDATE it makes
-- anyway (the same tuple is written either way), and kept afterwards.
ALTER TABLE cairn.actions ADD COLUMN last_host text;
