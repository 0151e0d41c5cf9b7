-- The Haskell ntf-server's PostgreSQL schema (simplexmq v6.5.5, migrations 20250417_initial and
-- 20250517_service_cert) as described in spec §6.1, written for the import tests.
CREATE SCHEMA ntf_server;

CREATE TABLE ntf_server.migrations (
  name text NOT NULL PRIMARY KEY,
  ts timestamp without time zone NOT NULL,
  down text
);

CREATE TABLE ntf_server.tokens (
  token_id bytea NOT NULL PRIMARY KEY,
  push_provider text NOT NULL,
  push_provider_token bytea NOT NULL,
  status text NOT NULL,
  verify_key bytea NOT NULL,
  dh_priv_key bytea NOT NULL,
  dh_secret bytea NOT NULL,
  reg_code bytea NOT NULL,
  cron_interval bigint NOT NULL,
  cron_sent_at bigint,
  updated_at bigint
);
CREATE UNIQUE INDEX idx_tokens_push_provider_token
  ON ntf_server.tokens (push_provider, push_provider_token, verify_key);
CREATE INDEX idx_tokens_status_cron_interval_sent_at
  ON ntf_server.tokens (status, cron_interval, ((cron_sent_at + cron_interval * 60)));

CREATE TABLE ntf_server.smp_servers (
  smp_server_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  smp_host text NOT NULL,
  smp_port text NOT NULL,
  smp_keyhash bytea NOT NULL,
  ntf_service_id bytea,
  ntf_service_cert bytea,
  ntf_service_cert_hash bytea,
  ntf_service_priv_key bytea
);
CREATE UNIQUE INDEX idx_smp_servers ON ntf_server.smp_servers (smp_host, smp_port, smp_keyhash);

CREATE TABLE ntf_server.subscriptions (
  subscription_id bytea NOT NULL PRIMARY KEY,
  token_id bytea NOT NULL REFERENCES ntf_server.tokens ON DELETE CASCADE ON UPDATE RESTRICT,
  smp_server_id bigint REFERENCES ntf_server.smp_servers ON DELETE RESTRICT ON UPDATE RESTRICT,
  smp_notifier_id bytea NOT NULL,
  smp_notifier_key bytea NOT NULL,
  status text NOT NULL,
  ntf_service_assoc boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX idx_subscriptions_smp_server_id_notifier_id
  ON ntf_server.subscriptions (smp_server_id, smp_notifier_id);
CREATE INDEX idx_subscriptions_smp_server_id_ntf_service_status
  ON ntf_server.subscriptions (smp_server_id, ntf_service_assoc, status);
CREATE INDEX idx_subscriptions_token_id ON ntf_server.subscriptions (token_id);

CREATE TABLE ntf_server.last_notifications (
  token_ntf_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  token_id bytea NOT NULL REFERENCES ntf_server.tokens ON DELETE CASCADE ON UPDATE RESTRICT,
  subscription_id bytea NOT NULL REFERENCES ntf_server.subscriptions ON DELETE CASCADE ON UPDATE RESTRICT,
  sent_at timestamp with time zone NOT NULL,
  nmsg_nonce bytea NOT NULL,
  nmsg_data bytea NOT NULL
);
CREATE INDEX idx_last_notifications_token_id_sent_at ON ntf_server.last_notifications (token_id, sent_at);
CREATE INDEX idx_last_notifications_subscription_id ON ntf_server.last_notifications (subscription_id);
CREATE UNIQUE INDEX idx_last_notifications_token_subscription
  ON ntf_server.last_notifications (token_id, subscription_id);

INSERT INTO ntf_server.migrations (name, ts) VALUES
  ('20250417_initial', now()), ('20250517_service_cert', now());
