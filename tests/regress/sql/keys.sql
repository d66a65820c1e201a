-- API tokens with spending limits (SPEC section 9): create, list, revoke with the root token;
-- per-request, rolling daily and monthly limits at their edges; the windows rolling over
-- (usage buckets moved back in time); 403 for other tokens; every refused spec.
\set VERBOSITY terse
begin;
set local echovalue.token_rate_seconds = 0;
select body as root from echovalue.token_new(client_addr => inet '192.0.2.70') \gset
select wallet_id as w from echovalue.tokens where hash = sha256(convert_to(:'root', 'UTF8')) \gset

-- create: shown once, with its id, label, limits and creation time; costs 1
select status, content_type, cost, balance, body::json ->> 'token' as sub, body::json ->> 'id' as sub_id
  from echovalue.token_key_create(token => :'root',
       spec => '{"label":"ci","limits":{"per_request":2,"daily":3,"monthly":10}}') \gset
select :status as status, :'content_type' as content_type, :cost as cost, :balance as balance,
       echovalue.token_format_ok(:'sub') as token_well_formed,
       :'sub_id' ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' as id_is_uuid;
select b - 'id' - 'token' - 'created' as body, (b ->> 'created') ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$' as created_rfc3339
  from (select body::jsonb as b from echovalue.token_key_create(token => :'root', spec => '{"label":"spare"}')) x;
-- only the SHA-256 is stored; the prefix shows the first 19 and last 4 characters
select t.label, t.is_root, t.hash = sha256(convert_to(:'sub', 'UTF8')) as hash_matches,
       t.prefix = left(:'sub', 19) || '...' || right(:'sub', 4) as prefix_matches
  from echovalue.tokens t where t.public_id = :'sub_id'::uuid;
select count(*) as rows_holding_the_token
  from echovalue.tokens t where t.prefix like '%' || substr(:'sub', 16, 32) || '%' or t.label = :'sub';

-- the new token works on every endpoint and says what is left of its limits
select status, body, cost, balance, headers
  from echovalue.kv_set(token => :'sub', grp => 'g', key => 'k', value => 'v');
select status, body, cost, balance, headers from echovalue.kv_get(token => :'sub', grp => 'g', key => 'k');
select u.credits, u.hour = date_trunc('hour', now(), 'UTC') as this_hour
  from echovalue.token_usage u where u.wallet_id = :w;

-- per request: a logs request of 3 entries costs 3 > 2, refused whole with the JSON 402
select status, body::jsonb as body, content_type, cost, balance, headers
  from echovalue.logs_get(token => :'sub', n => '3');
select status, cost, balance from echovalue.logs_get(token => :'sub', n => '1');
-- daily: 3 spent of 3; the next credit is refused, nothing charged, nothing written, logged
select status, body::jsonb as body, cost, balance, headers
  from echovalue.kv_set(token => :'sub', grp => 'g', key => 'k', value => 'changed');
select value from echovalue.kv where wallet_id = :w;
select endpoint, status_code, error, cost, balance from echovalue.logs where wallet_id = :w order by id desc limit 2;
-- free operations still pass at the limit
select status, cost from echovalue.recharge_link(token => :'sub', amount => '1');
-- the root token is not limited
select status, cost, balance, headers from echovalue.kv_get(token => :'root', grp => 'g', key => 'k');

-- the daily window: a spend counts until its hour is more than 24 hours old
update echovalue.token_usage set hour = hour - interval '24 hours' where wallet_id = :w;
select status, body::jsonb ->> 'limit' as refused_by from echovalue.kv_get(token => :'sub', grp => 'g', key => 'k');
update echovalue.token_usage set hour = hour - interval '1 hour' where wallet_id = :w;
select status, cost, headers from echovalue.kv_get(token => :'sub', grp => 'g', key => 'k');

-- the monthly window: 9 of 10 spent 29 days ago; one more fits, then no; 31 days ago it is out
delete from echovalue.token_usage where wallet_id = :w;
insert into echovalue.token_usage (wallet_id, token_id, hour, credits)
select :w, t.id, date_trunc('hour', now(), 'UTC') - interval '29 days', 9
  from echovalue.tokens t where t.public_id = :'sub_id'::uuid;
select status, cost, headers from echovalue.kv_get(token => :'sub', grp => 'g', key => 'k');
select status, body::jsonb as body, cost from echovalue.kv_get(token => :'sub', grp => 'g', key => 'k');
update echovalue.token_usage set hour = hour - interval '2 days'
 where wallet_id = :w and hour < now() - interval '1 day';
select status, cost, headers from echovalue.kv_get(token => :'sub', grp => 'g', key => 'k');

-- the wallet's balance still applies to a token within its limits
update echovalue.token_usage set credits = 0 where wallet_id = :w;
update echovalue.wallets set balance = 0 where id = :w;
select status, body, cost, balance, headers from echovalue.kv_get(token => :'sub', grp => 'g', key => 'k');
update echovalue.wallets set balance = 100 where id = :w;

-- list: every token, oldest first, the root one included; never a token
select status, cost, balance, position(:'sub' in body) as sub_token_in_body,
       position(:'root' in body) as root_token_in_body
  from echovalue.token_key_list(token => :'root');
select k - 'id' - 'created' - 'last_used' - 'prefix' as key, k ->> 'prefix' like 'ev_tok_sk_live_%...%' as prefixed,
       (k ->> 'last_used') is not null as used
  from echovalue.token_key_list(token => :'root') o,
       jsonb_array_elements(o.body::jsonb -> 'keys') with ordinality as e(k, i)
 order by i;

-- only the root token manages tokens: 403, charged and logged like other errors
select status, body, cost from echovalue.token_key_list(token => :'sub');
select body::json ->> 'token' as spare from echovalue.token_key_create(token => :'root', spec => '{}') \gset
select status, body, cost from echovalue.token_key_create(token => :'spare', spec => '{}');
select status, body, cost from echovalue.token_key_revoke(token => :'spare', key_id => :'sub_id');
select status_code, error, cost from echovalue.logs where wallet_id = :w order by id desc limit 1;

-- revoke: immediate; again is a no-op; unknown, malformed, other wallet's ids are 404; root 400
select status, body, cost from echovalue.token_key_revoke(token => :'root', key_id => :'sub_id');
select status, body, cost, balance from echovalue.kv_get(token => :'sub', grp => 'g', key => 'k');
select status, body from echovalue.token_key_revoke(token => :'root', key_id => :'sub_id');
select status, body, cost from echovalue.token_key_revoke(token => :'root', key_id => '00000000-0000-0000-0000-000000000000');
select status, body, cost from echovalue.token_key_revoke(token => :'root', key_id => 'not-a-uuid');
select status, body, cost from echovalue.token_key_revoke(token => :'root', key_id => '');
select public_id as root_id from echovalue.tokens where wallet_id = :w and is_root \gset
select status, body, cost from echovalue.token_key_revoke(token => :'root', key_id => :'root_id');
select body as other from echovalue.token_new(client_addr => inet '192.0.2.71') \gset
select status, body from echovalue.token_key_revoke(token => :'other', key_id => :'root_id');
select (k ->> 'revoked') is not null as revoked, k ->> 'label' as label
  from echovalue.token_key_list(token => :'root') o, jsonb_array_elements(o.body::jsonb -> 'keys') k
 order by k ->> 'created';
select status from echovalue.wallet_get(token => :'sub');
rollback;

-- every refused spec: 400 with the rule, charged 1, nothing created
begin;
set local echovalue.token_rate_seconds = 0;
select body as root from echovalue.token_new(client_addr => inet '192.0.2.72') \gset
select left(spec, 40) as spec, (echovalue.token_key_create(token => :'root', spec => spec)).body
  from unnest(array[
    '{bad', '[]', '"x"', '42', 'null', '  ',
    '{"lable":"x"}', '{"label":5}', '{"label":"' || repeat('x', 101) || '"}', '{"label":"a\u0007b"}',
    '{"limits":5}', '{"limits":{"dayly":1}}', '{"limits":{"daily":1.5}}', '{"limits":{"daily":-1}}',
    '{"limits":{"daily":"5"}}', '{"limits":{"monthly":1e16}}', '{"limits":{"per_request":true}}',
    '"\u0000"', repeat('[', 10000)
  ]) as spec;
select count(*) as tokens, min(balance) as balance
  from echovalue.tokens t join echovalue.wallets w on w.id = t.wallet_id
 where w.hash = encode(sha256(convert_to(:'root', 'UTF8')), 'hex');
-- accepted: empty body, nulls, zero, the largest limit
select spec, x.status, x.b -> 'label' as label, x.b -> 'limits' as limits
  from unnest(array['', '{}', '{"label":null,"limits":null}', '{"limits":{"daily":0}}',
                    '{"label":"é ✓","limits":{"monthly":1000000000000000}}']) as spec,
       lateral (select o.status, o.body::jsonb as b
                  from echovalue.token_key_create(token => :'root', spec => spec) o) x;
-- a zero limit refuses every charged request, not free ones
select body::json ->> 'token' as zero from echovalue.token_key_create(token => :'root', spec => '{"limits":{"daily":0}}') \gset
select status, body::jsonb ->> 'limit' as refused_by, cost from echovalue.wallet_get(token => :'zero');
select status, cost from echovalue.recharge_link(token => :'zero', amount => '3');
-- at most echovalue.max_tokens live tokens per wallet (root included)
set local echovalue.max_tokens = 7;
select status, body from echovalue.token_key_create(token => :'root');
rollback;

-- maintenance: usage buckets past 30 days and tokens revoked long ago are purged
begin;
set local echovalue.token_rate_seconds = 0;
select body as root from echovalue.token_new(client_addr => inet '192.0.2.73') \gset
select wallet_id as w from echovalue.tokens where hash = sha256(convert_to(:'root', 'UTF8')) \gset
select body::json ->> 'token' as a, body::json ->> 'id' as a_id from echovalue.token_key_create(token => :'root', spec => '{}') \gset
select body::json ->> 'token' as b from echovalue.token_key_create(token => :'root', spec => '{}') \gset
select status from echovalue.kv_set(token => :'a', grp => 'g', key => 'k', value => 'v');
select status from echovalue.kv_set(token => :'b', grp => 'g', key => 'k', value => 'v');
update echovalue.token_usage set hour = hour - interval '31 days'
 where token_id = (select id from echovalue.tokens where hash = sha256(convert_to(:'b', 'UTF8')));
select status from echovalue.token_key_revoke(token => :'root', key_id => :'a_id');
update echovalue.tokens set revoked = now() - interval '31 days' where public_id = :'a_id'::uuid;
select echovalue.maintenance_run() - 'kv' - 'logs' - 'wallets' - 'token_rate' as purged;
select count(*) as tokens_left from echovalue.tokens where wallet_id = :w;
select count(*) as buckets_left from echovalue.token_usage where wallet_id = :w;
rollback;

-- the request context is a value passed from step to step, not a setting: the proxy's role
-- can neither resolve a caller nor pay with one it made up
begin;
set local role echovalue_proxy;
select echovalue._wallet_resolve('x', 'GET', '/token');
rollback;
begin;
set local role echovalue_proxy;
select echovalue._pay(row(1, 1, true, null, null, null, 'GET', '/', null, null)::echovalue.caller, 'kv_get');
rollback;
