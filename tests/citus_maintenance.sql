-- The maintenance check of the scale-out suite (tests/citus.sh, suite `maintenance`), run by
-- psql on the coordinator after echovalue.distribute(): maintenance_run() purges, across the
-- shards, what is due and nothing else. One line per check: `ok    <what>` or `FAIL  <what>`.
\set ON_ERROR_STOP 1
set client_min_messages = warning;
set echovalue.token_rate_seconds = 0;
select body as tok from echovalue.token_new(client_addr => '198.51.100.201') \gset
select body as idle from echovalue.token_new(client_addr => '198.51.100.202') \gset
select echovalue.token_wallet(:'tok') as w, echovalue.token_wallet(:'idle') as idle_w \gset
select k.status from echovalue.kv_set(token => :'tok', grp => 'g', key => 'old', value => 'v') k \g /dev/null
select k.status from echovalue.kv_set(token => :'tok', grp => 'g', key => 'new', value => 'v') k \g /dev/null
select (t.body::json ->> 'id') as sub from echovalue.token_key_create(token => :'tok') t \gset
select r.status from echovalue.token_key_revoke(token => :'tok', key_id => :'sub') r \g /dev/null

-- what is due: one key, the wallet's log entries, the revoked token, the idle wallet
update echovalue.kv set expires_at = now() - interval '1 second' where wallet_id = :w and key = 'old';
update echovalue.logs set expires_at = now() - interval '1 second' where wallet_id = :w;
update echovalue.tokens
   set revoked = now() - make_interval(days => current_setting('echovalue.revoked_token_days')::int + 1)
 where wallet_id = :w and public_id = :'sub'::uuid;
update echovalue.wallets
   set last_used = now() - make_interval(days => current_setting('echovalue.inactive_days')::int + 1)
 where id = :idle_w;

-- (each node's background worker runs it too, so either may purge first: the checks are of
-- what is left)
select echovalue.maintenance_run() \g /dev/null
select echovalue.maintenance_run() \g /dev/null

select case when array(select key from echovalue.kv where wallet_id = :w) = '{new}' then 'ok    ' else 'FAIL  ' end
       || 'the expired key is gone, the live one kept';
select case when not exists (select from echovalue.logs where wallet_id = :w) then 'ok    ' else 'FAIL  ' end
       || 'the expired log entries are gone';
select case when (select count(*) from echovalue.tokens where wallet_id = :w) = 1 then 'ok    ' else 'FAIL  ' end
       || 'the revoked token is gone, the root token kept';
select case when not exists (select from echovalue.wallets where id = :idle_w)
             and not exists (select from echovalue.tokens where wallet_id = :idle_w) then 'ok    ' else 'FAIL  ' end
       || 'the idle wallet is gone with its token';
select case when exists (select from echovalue.wallets where id = :w) then 'ok    ' else 'FAIL  ' end
       || 'the used wallet is kept';
select case when (select k.status from echovalue.kv_get(token => :'tok', grp => 'g', key => 'new') k) = 200
            then 'ok    ' else 'FAIL  ' end || 'the wallet still answers';
