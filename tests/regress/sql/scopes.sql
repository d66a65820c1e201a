-- Token scopes and KV groups (SPEC section 15): each scope allows exactly its API functions,
-- the defaults, the root token's every scope, groups, scopes beside spending limits, the
-- refused specs, and the 403 charged and logged like any error.
\set VERBOSITY terse
begin;
set local echovalue.token_rate_seconds = 0;
select body as root from echovalue.token_new(client_addr => inet '192.0.2.80') \gset
select wallet_id as w from echovalue.tokens where hash = sha256(convert_to(:'root', 'UTF8')) \gset
update echovalue.wallets set balance = 100000 where id = :w;

-- one token per scope, one with the defaults (no scopes given), and the root token
create temp table scoped (scope text, token text) on commit drop;
insert into scoped
select s, (echovalue.token_key_create(token => :'root',
              spec => pg_catalog.format('{"label":%s,"scopes":[%s]}', to_json(s), to_json(s)))).body::json ->> 'token'
  from unnest(echovalue._scope_names()) s;
insert into scoped
select 'defaults', (echovalue.token_key_create(token => :'root', spec => '{"label":"plain"}')).body::json ->> 'token';
insert into scoped values ('root', :'root');

-- every API function a token calls, with arguments that pass everything but the scope
create function pg_temp.calls(p_token text) returns table (op text, status int) language sql as $$
    select 'kv_get', (echovalue.kv_get(p_token, 'g', 'k')).status
    union all select 'kv_set', (echovalue.kv_set(p_token, 'g', 'k', 'v')).status
    union all select 'kv_delete', (echovalue.kv_delete(p_token, 'g', 'none')).status
    union all select 'logs_get', (echovalue.logs_get(p_token, '1')).status
    union all select 'wallet_get', (echovalue.wallet_get(p_token)).status
    union all select 'recharge_link', (echovalue.recharge_link(p_token)).status
    union all select 'webhook_set', (echovalue.webhook_set(p_token, '{"url":"https://example.com/h"}')).status
    union all select 'webhook_get', (echovalue.webhook_get(p_token)).status
    union all select 'webhook_show', (echovalue.webhook_show(p_token, 'default')).status
    union all select 'webhook_put', (echovalue.webhook_put(p_token, 'second', '{"url":"https://example.com/2"}')).status
    union all select 'webhook_patch', (echovalue.webhook_patch(p_token, 'second', '{"headers":{}}')).status
    union all select 'webhook_test', (echovalue.webhook_test(p_token, 'none')).status
    union all select 'webhook_remove', (echovalue.webhook_remove(p_token, 'second')).status
    union all select 'webhook_delete', (echovalue.webhook_delete(p_token)).status
    union all select 'settings_get', (echovalue.settings_get(p_token)).status
    union all select 'settings_put', (echovalue.settings_put(p_token, '{"low_balance_threshold":0}')).status
    union all select 'token_key_list', (echovalue.token_key_list(p_token)).status
$$;

-- which functions each token may call (anything but 403)
select s.scope, string_agg(c.op, ' ' order by c.op) filter (where c.status <> 403) as allowed
  from scoped s, lateral pg_temp.calls(s.token) c
 group by s.scope order by s.scope;

-- a refusal is a charged, logged 403 `Forbidden`: a kv:read token cannot set or delete
select token as reader from scoped where scope = 'kv:read' \gset
select balance as before from echovalue.wallets where id = :w \gset
select status, body, cost, balance = :before - 1 as charged_one
  from echovalue.kv_set(token => :'reader', grp => 'g', key => 'k2', value => 'v');
select status, body, cost from echovalue.kv_delete(token => :'reader', grp => 'g', key => 'k');
select status, body, cost from echovalue.kv_get(token => :'reader', grp => 'g', key => 'k');
select method, path, endpoint, status_code, error, cost from echovalue.logs
 where wallet_id = :w order by id desc limit 3;
-- before validation: a refused scope is 403 even for a request that is bad otherwise
select status, body from echovalue.kv_set(token => :'reader', grp => 'g', key => 'k', value => null);
-- a logs request of n entries is refused for one credit, not n
select status, cost from echovalue.logs_get(token => :'reader', n => '50');

-- the listing shows each token's scopes and groups; the root token has them all
select k ->> 'label' as label, k -> 'scopes' as scopes, k -> 'groups' as groups
  from jsonb_array_elements((echovalue.token_key_list(token => :'root')).body::jsonb -> 'keys') k
 where k ->> 'label' in ('root', 'plain', 'kv:read')
 order by k ->> 'label';

-- groups: a token limited to group a may use a, gets a charged, logged 403 on b, and on a
-- group name that breaks the rules (no such group can be listed)
select body::json ->> 'token' as in_a, body::jsonb - 'id' - 'token' - 'created' - 'limits' as answer
  from echovalue.token_key_create(token => :'root',
       spec => '{"label":"a only","scopes":["kv:write","kv:read","kv:read"],"groups":["a","a"]}') \gset
select :'answer' as answer;
select status, body from echovalue.kv_set(token => :'in_a', grp => 'a', key => 'k', value => 'v');
select status, body from echovalue.kv_get(token => :'in_a', grp => 'a', key => 'k');
select status, body, cost from echovalue.kv_set(token => :'in_a', grp => 'b', key => 'k', value => 'v');
select status, body, cost from echovalue.kv_get(token => :'in_a', grp => 'b', key => 'k');
select status, body, cost from echovalue.kv_delete(token => :'in_a', grp => 'b', key => 'k');
select status, body from echovalue.kv_get(token => :'in_a', grp => 'reserved-x', key => 'k');
select status, body from echovalue.kv_get(token => :'root', grp => 'reserved-x', key => 'k');
select path, status_code, error, cost from echovalue.logs
 where wallet_id = :w and path like '/kv/b/%' order by id;
-- group b was never touched
select count(*) as keys_in_b from echovalue.kv where wallet_id = :w and grp = 'b';

-- scopes and spending limits together: the 403 is charged, so it counts toward the limit
select body::json ->> 'token' as capped
  from echovalue.token_key_create(token => :'root',
       spec => '{"label":"capped","scopes":["kv:read"],"limits":{"daily":2}}') \gset
select status, body, cost from echovalue.kv_set(token => :'capped', grp => 'g', key => 'k', value => 'v');
select status, cost from echovalue.kv_get(token => :'capped', grp => 'g', key => 'k');
select status, body::json ->> 'error_description' as why, cost
  from echovalue.kv_get(token => :'capped', grp => 'g', key => 'k');
select status, body::json ->> 'error_description' as why, cost
  from echovalue.kv_set(token => :'capped', grp => 'g', key => 'k', value => 'v');

-- a wallet that cannot pay gets the 402, not the 403
update echovalue.wallets set balance = 0 where id = :w;
select status, body, cost from echovalue.kv_set(token => :'reader', grp => 'g', key => 'k', value => 'v');
update echovalue.wallets set balance = 100000 where id = :w;

-- refused specs: 400, charged, nothing made
select spec, (echovalue.token_key_create(token => :'root', spec => spec)).body
  from (values ('{"scopes":["kv:admin"]}'), ('{"scopes":[]}'), ('{"scopes":"kv:read"}'),
               ('{"scopes":[1]}'), ('{"scopes":["kv:read","kv:write","logs","wallet","webhook","settings","logs"]}'),
               ('{"groups":[]}'), ('{"groups":"a"}'), ('{"groups":[7]}'), ('{"groups":["a/b"]}'),
               ('{"groups":["reserved-x"]}'), ('{"groups":["a","' || repeat('x', 31) || '"]}'),
               ('{"groups":["a\u0000"]}'), ('{"scopes":["' || repeat('x', 200) || '"]}')) v(spec);
select count(*) as tokens from echovalue.tokens where wallet_id = :w;
-- null means the defaults
select body::jsonb -> 'scopes' as scopes, body::jsonb -> 'groups' as groups
  from echovalue.token_key_create(token => :'root', spec => '{"scopes":null,"groups":null}');

-- the table keeps the rule too: a root token has no scopes, others only known ones
savepoint rule;
update echovalue.tokens set scopes = '{kv:read}' where wallet_id = :w and is_root;
rollback to rule;
update echovalue.tokens set scopes = '{root}' where wallet_id = :w and label = 'plain';
rollback to rule;
rollback;
