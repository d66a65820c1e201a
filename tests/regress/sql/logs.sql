-- logs_get: newest first, n handling, cost per entry, 402, entry fields.
\set VERBOSITY terse
begin;
set local echovalue.token_rate_seconds = 0;
select body as tok from echovalue.token_new(client_addr => inet '192.0.2.20') \gset
select wallet_id as w from echovalue.tokens where hash = sha256(convert_to(:'tok', 'UTF8')) \gset
select status from echovalue.kv_set(token => :'tok', grp => 'g', key => 'k', value => 'v',
                                    http_path => '/kv/g/k?ttl=60', ttl => '60');
select status from echovalue.kv_get(token => :'tok', grp => 'g', key => 'missing');

-- happy path: n=2 returns the two newest entries and costs 2
select status, content_type, cost, balance, body::jsonb ->> 'n' as n,
       jsonb_array_length(body::jsonb -> 'logs') as entries,
       body ~ '^\{"logs":\[\{"id":"\d+","method":"GET",.*\],"n":2\}$' as compact_shape
  from echovalue.logs_get(token => :'tok', n => '2');
select body as logs_body from echovalue.logs_get(token => :'tok', n => '2') \gset
select e ->> 'method' as method, e ->> 'path' as path, e ->> 'endpoint' as endpoint,
       e -> 'status_code' as status_code, e ->> 'error' as error, e -> 'cost' as cost,
       e -> 'balance' as balance, jsonb_typeof(e -> 'id') as id_type,
       (e ->> 'timestamp') ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$' as ts_rfc3339,
       ((e ->> 'expiration')::timestamptz - (e ->> 'timestamp')::timestamptz) as retention,
       array(select jsonb_object_keys(e) order by 1) as keys
  from jsonb_array_elements(:'logs_body'::jsonb -> 'logs') with ordinality as x(e, i)
 order by i;
-- field order as documented
select :'logs_body' ~ '^\{"logs":\[\{"id":"\d+","method":"GET","path":"/token/logs","endpoint":"token","status_code":200,"timestamp":"[^"]+","expiration":"[^"]+","cost":2,"balance":\d+\},' as field_order;

-- default n is 5; the logs request itself is logged after, not in its own result
select cost, balance, body::jsonb ->> 'n' as n,
       (select array_agg(e ->> 'path') from jsonb_array_elements(body::jsonb -> 'logs') e) as paths
  from echovalue.logs_get(token => :'tok');
-- n above 100 is cut to 100, and fewer entries than n cost only what is returned
select cost, body::jsonb ->> 'n' as n from echovalue.logs_get(token => :'tok', n => '1000');
select cost, body::jsonb ->> 'n' as n from echovalue.logs_get(token => :'tok', n => '99999999999999999999');
select cost, body::jsonb ->> 'n' as n from echovalue.logs_get(token => :'tok', n => '007');
select count(*) as kept from echovalue.logs where wallet_id = :w;
insert into echovalue.logs (wallet_id, expires_at, method, path, endpoint, status_code, cost, balance)
select :w, now() + interval '7 days', 'GET', '/kv/g/k', 'kv', 200, 1, 1 from generate_series(1, 120);
update echovalue.wallets set balance = 1000 where id = :w;
select cost, body::jsonb ->> 'n' as n, jsonb_array_length(body::jsonb -> 'logs') as entries
  from echovalue.logs_get(token => :'tok', n => '1000');

-- expired entries are not returned even before they are purged
delete from echovalue.logs where wallet_id = :w and path = '/kv/g/k';
update echovalue.logs set expires_at = now() - interval '1 second'
 where wallet_id = :w and id in (select id from echovalue.logs where wallet_id = :w order by id limit 3);
select cost, body::jsonb ->> 'n' as n from echovalue.logs_get(token => :'tok', n => '100');

-- a wallet without entries gets an empty list for free
delete from echovalue.logs where wallet_id = :w;
select status, body, cost, balance - (select balance from echovalue.wallets where id = :w) as after_diff
  from echovalue.logs_get(token => :'tok', n => '3');

-- a wallet that cannot pay for all K entries gets 402; nothing charged, logged with cost 0
insert into echovalue.logs (wallet_id, expires_at, method, path, endpoint, status_code, cost, balance)
select :w, now() + interval '7 days', 'GET', '/kv/g/k', 'kv', 200, 1, 1 from generate_series(1, 5);
update echovalue.wallets set balance = 4 where id = :w;
select status, body, content_type, cost, balance from echovalue.logs_get(token => :'tok', n => '5');
select method, path, endpoint, status_code, error, cost, balance
  from echovalue.logs where wallet_id = :w order by id desc limit 1;
-- exactly enough is fine: 6 entries now (5 + the 402), n=4 costs 4 of 4
select status, cost, balance, body::jsonb ->> 'n' as n from echovalue.logs_get(token => :'tok', n => '4');

-- rejected n: 400, charged one entry's price, logged
update echovalue.wallets set balance = 100 where id = :w;
select status, body, cost, balance from echovalue.logs_get(token => :'tok', n => '0');
select status, body, cost from echovalue.logs_get(token => :'tok', n => '-1');
select status, body, cost from echovalue.logs_get(token => :'tok', n => '1.5');
select status, body, cost from echovalue.logs_get(token => :'tok', n => 'abc');
select status, body, cost from echovalue.logs_get(token => :'tok', n => '');
select status, body, cost from echovalue.logs_get(token => :'tok', n => '1e3');
select status, body, cost from echovalue.logs_get(token => :'tok', n => '00');
select status_code, error, cost, endpoint from echovalue.logs where wallet_id = :w order by id desc limit 1;
-- bad token: 401, not logged
select status, body, cost, balance from echovalue.logs_get(token => 'nope', n => '5');

-- type filters by endpoint (SPEC §14): newest first, charged per entry returned; an
-- unknown type is a 400 charged one entry; a type with no entries returns none
update echovalue.wallets set balance = 100 where id = :w;
select status, cost, body::jsonb ->> 'n' as n,
       (select string_agg(e->>'endpoint' || ':' || (e->>'path'), ',')
          from jsonb_array_elements(body::jsonb -> 'logs') e) as entries
  from echovalue.logs_get(token => :'tok', n => '3', type => 'kv');
select status, cost, body::jsonb ->> 'n' as n,
       (select bool_and(e->>'endpoint' = 'token') from jsonb_array_elements(body::jsonb -> 'logs') e) as all_token
  from echovalue.logs_get(token => :'tok', n => '100', type => 'token');
select status, body, cost from echovalue.logs_get(token => :'tok', n => '5', type => 'webhook-delivery');
select status, body, cost from echovalue.logs_get(token => :'tok', type => 'KV');
select status, body, cost from echovalue.logs_get(token => :'tok', type => '');
select status, body, cost from echovalue.logs_get(token => :'tok', type => 'kv; drop table x');
-- the filtered page reads the endpoint index, not every entry of the wallet (the index
-- statistics of this transaction: the primary key's scan would read the wallet's entries)
select pg_stat_get_xact_tuples_returned('echovalue.logs_endpoint_idx'::regclass) as idx_before,
       pg_stat_get_xact_tuples_returned('echovalue.logs_pkey'::regclass) as pkey_before \gset
select count(*) as page from echovalue._logs_newest(:w, 'kv', 5);
select pg_stat_get_xact_tuples_returned('echovalue.logs_endpoint_idx'::regclass) - :idx_before
           between 1 and 6 as endpoint_index_read,
       pg_stat_get_xact_tuples_returned('echovalue.logs_pkey'::regclass) - :pkey_before
           as pkey_tuples_read;

-- retention is a setting: entries expire log_retention_days after creation
set local echovalue.log_retention_days = 1;
select status from echovalue.wallet_get(token => :'tok');
select expires_at - created as retention from echovalue.logs where wallet_id = :w order by id desc limit 1;

-- a log entry stays small: the path is cut to log_max_path_chars, the error to 500 characters
set local echovalue.log_max_path_chars = 40;
update echovalue.wallets set balance = 1000 where id = :w;
select status from echovalue.kv_get(token => :'tok', grp => 'g', key => 'k',
                                    http_path => '/kv/g/k?' || repeat('x', 20000));
select char_length(path) as path_chars, path from echovalue.logs where wallet_id = :w order by id desc limit 1;
select status, char_length(body) as body_chars
  from echovalue.request_refuse(token => :'tok', route => '/kv/{group}/{key}', status => 400,
                                error => 'Bad Request: ' || repeat('y', 5000), http_method => 'POST', http_path => '/kv/g/k');
select char_length(error) as error_chars from echovalue.logs where wallet_id = :w order by id desc limit 1;

-- refusals that charge nothing are logged at most refusal_logs_per_minute times a minute per
-- wallet (this transaction is one minute: now() does not move); paid calls always are
set local echovalue.refusal_logs_per_minute = 3;
delete from echovalue.refusal_log_rate where wallet_id = :w;   -- (the 402s above counted too)
select max(id) as last from echovalue.logs where wallet_id = :w \gset
update echovalue.wallets set balance = 0 where id = :w;
select count(*) filter (where r.status = 402) as refused
  from generate_series(1, 10) n, lateral echovalue.kv_get(token => :'tok', grp => 'g', key => 'k' || n) r;
select count(*) as logged, bool_and(status_code = 402 and cost = 0) as all_402
  from echovalue.logs where wallet_id = :w and id > :last;
-- a free operation's error counts the same way (recharge_link costs 0): not logged now
select status, body from echovalue.recharge_link(token => :'tok', amount => '7');
select count(*) as logged from echovalue.logs where wallet_id = :w and id > :last;
update echovalue.wallets set balance = 100 where id = :w;
select count(*) filter (where r.status = 200) as paid
  from generate_series(1, 10) n, lateral echovalue.kv_set(token => :'tok', grp => 'g', key => 'k' || n, value => 'v') r;
select count(*) as logged from echovalue.logs where wallet_id = :w and id > :last;
-- the next minute counts afresh
update echovalue.refusal_log_rate set minute = minute - interval '1 minute' where wallet_id = :w;
update echovalue.wallets set balance = 0 where id = :w;
select (echovalue.kv_get(token => :'tok', grp => 'g', key => 'k')).status;
select count(*) as logged from echovalue.logs where wallet_id = :w and id > :last;
-- a refusal of an earlier minute that comes after the next minute's has filled it counts
-- against that later minute (never resets it): not logged
update echovalue.refusal_log_rate set minute = minute + interval '1 minute', entries = 3
 where wallet_id = :w;
select (echovalue.kv_get(token => :'tok', grp => 'g', key => 'k')).status;
select count(*) as logged from echovalue.logs where wallet_id = :w and id > :last;
select entries, minute > pg_catalog.now() as later_minute_kept
  from echovalue.refusal_log_rate where wallet_id = :w;
rollback;
