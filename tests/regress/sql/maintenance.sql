-- maintenance_run: bounded batches of expired keys, expired logs, stale rate-limit rows and
-- inactive wallets with all their data.
\set VERBOSITY terse
begin;
set local echovalue.token_rate_seconds = 0;
set local echovalue.maintenance_batch = 2;
select body as tok from echovalue.token_new(client_addr => inet '192.0.2.50') \gset
select wallet_id as w from echovalue.tokens where hash = sha256(convert_to(:'tok', 'UTF8')) \gset
select body as old_tok from echovalue.token_new(client_addr => inet '192.0.2.51') \gset
select wallet_id as old_w from echovalue.tokens where hash = sha256(convert_to(:'old_tok', 'UTF8')) \gset

-- three expired keys and one live one
select (echovalue.kv_set(token => :'tok', grp => 'g', key => k, value => 'v')).status
  from unnest(array['a', 'b', 'c', 'live']) k;
update echovalue.kv set expires_at = now() - interval '1 second' where wallet_id = :w and key <> 'live';
-- three expired log entries
update echovalue.logs set expires_at = now() - interval '1 second'
 where id in (select id from echovalue.logs where wallet_id = :w order by id limit 3);
select count(*) as live_logs from echovalue.logs where wallet_id = :w and expires_at > now();
-- rate-limit rows older than the window are stale: three stale, one fresh (plus the two
-- fresh rows of the token_new calls above)
set local echovalue.token_rate_seconds = 10;
insert into echovalue.token_rate (client, last_at) values
    (inet '203.0.113.1', now() - interval '5 seconds'),
    (inet '203.0.113.2', now() - interval '11 seconds'),
    (inet '203.0.113.3', now() - interval '1 day'),
    (inet '2001:db8::3', now() - interval '10 seconds');
-- a wallet unused for more than echovalue.inactive_days, with data
select status from echovalue.kv_set(token => :'old_tok', grp => 'g', key => 'k', value => 'v');
update echovalue.wallets set last_used = now() - interval '731 days' where id = :old_w;

-- batches of 2: the first run takes 2 of each, the next takes the rest, then nothing is left
select echovalue.maintenance_run();
select echovalue.maintenance_run();
select echovalue.maintenance_run();

select key from echovalue.kv where wallet_id = :w order by key;
select count(*) as live_logs_kept from echovalue.logs where wallet_id = :w;
select client from echovalue.token_rate
 where client in ('192.0.2.50', '192.0.2.51', '203.0.113.1', '203.0.113.2', '203.0.113.3', '2001:db8::3')
 order by client;
select (select count(*) from echovalue.wallets where id = :old_w) as old_wallet,
       (select count(*) from echovalue.tokens where wallet_id = :old_w) as old_tokens,
       (select count(*) from echovalue.kv where wallet_id = :old_w) as old_kv,
       (select count(*) from echovalue.logs where wallet_id = :old_w) as old_logs;
select status, body from echovalue.wallet_get(token => :'old_tok');
select status from echovalue.wallet_get(token => :'tok');
rollback;

-- the result always names every purged table
begin;
set local echovalue.token_rate_seconds = 0;
select body as tok from echovalue.token_new(client_addr => inet '192.0.2.52') \gset
select wallet_id as w from echovalue.tokens where hash = sha256(convert_to(:'tok', 'UTF8')) \gset
select status from echovalue.kv_set(token => :'tok', grp => 'g', key => 'k', value => 'v');
update echovalue.kv set expires_at = now() - interval '1 second' where wallet_id = :w;
select jsonb_typeof(echovalue.maintenance_run()) as result_type,
       (echovalue.maintenance_run() ?& array['kv', 'logs', 'token_rate', 'wallets']) as all_counts;
rollback;

-- the inactivity window is a setting
begin;
set local echovalue.token_rate_seconds = 0;
set local echovalue.inactive_days = 30;
select body as tok from echovalue.token_new(client_addr => inet '192.0.2.53') \gset
update echovalue.wallets set last_used = now() - interval '31 days'
 where id = (select wallet_id from echovalue.tokens where hash = sha256(convert_to(:'tok', 'UTF8')));
select echovalue.maintenance_run() -> 'wallets' as wallets;
rollback;

-- an old token's row of token_legacy (0.9.0) goes with its token: a revoked token purged, and
-- the tokens of a purged wallet; a live token keeps its row and keeps working
begin;
set local echovalue.token_rate_seconds = 0;
select body as tok from echovalue.token_new(client_addr => inet '192.0.2.53') \gset
select wallet_id as w from echovalue.tokens where hash = sha256(convert_to(:'tok', 'UTF8')) \gset
select body as gone_tok from echovalue.token_new(client_addr => inet '192.0.2.54') \gset
select wallet_id as gw from echovalue.tokens where hash = sha256(convert_to(:'gone_tok', 'UTF8')) \gset
select body::json ->> 'token' as sub from echovalue.token_key_create(token => :'tok') \gset
-- as the upgrades fill them (an old mailbox of each wallet, 0.11.0, goes the same way)
insert into echovalue.token_legacy
select hash, wallet_id from echovalue.tokens where wallet_id in (:w, :gw);
insert into echovalue.mailbox_legacy
values ('0123456789abcdef01234567', :w), ('fedcba9876543210fedcba98', :gw);
update echovalue.tokens set revoked = now() - interval '400 days'
 where hash = sha256(convert_to(:'sub', 'UTF8'));
update echovalue.wallets set last_used = now() - interval '731 days' where id = :gw;
select r -> 'revoked_tokens' as revoked_tokens, r -> 'wallets' as wallets
  from echovalue.maintenance_run() r;
select count(*) filter (where wallet_id = :w) as kept_rows,
       count(*) filter (where wallet_id = :gw) as purged_wallet_rows,
       count(*) filter (where hash = sha256(convert_to(:'sub', 'UTF8'))) as revoked_token_rows
  from echovalue.token_legacy;
select pg_catalog.array_agg(wallet_id = :w) as kept_mailboxes from echovalue.mailbox_legacy;
select status from echovalue.wallet_get(token => :'tok');
rollback;
