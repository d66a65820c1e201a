-- kv_set, kv_get, kv_delete: happy path, TTL and expiry, then every rejected input.
\set VERBOSITY terse
begin;
set local echovalue.token_rate_seconds = 0;
select body as tok from echovalue.token_new(client_addr => inet '192.0.2.10') \gset
select wallet_id as w from echovalue.tokens where hash = sha256(convert_to(:'tok', 'UTF8')) \gset

-- happy path: set, get, overwrite, delete
select status, body, content_type, cost, balance, headers
  from echovalue.kv_set(token => :'tok', grp => 'default', key => 'mykey', value => 'hello world');
select status, body, content_type, cost, balance
  from echovalue.kv_get(token => :'tok', grp => 'default', key => 'mykey');
select status, body, cost, balance
  from echovalue.kv_set(token => :'tok', grp => 'default', key => 'mykey', value => 'second');
select status, body, cost, balance
  from echovalue.kv_get(token => :'tok', grp => 'default', key => 'mykey');
-- groups are separate namespaces; an empty value is a value
select status, body, cost, balance
  from echovalue.kv_set(token => :'tok', grp => 'other', key => 'mykey', value => '');
select status, body = '' as empty_value, cost, balance
  from echovalue.kv_get(token => :'tok', grp => 'other', key => 'mykey');
select status, body, cost, balance
  from echovalue.kv_get(token => :'tok', grp => 'default', key => 'mykey');
select status, body, cost, balance
  from echovalue.kv_delete(token => :'tok', grp => 'default', key => 'mykey');
select status, body, cost, balance
  from echovalue.kv_get(token => :'tok', grp => 'default', key => 'mykey');
select status, body, cost, balance
  from echovalue.kv_delete(token => :'tok', grp => 'default', key => 'mykey');
-- every call was logged with its method, path and error
select method, path, endpoint, status_code, error, cost, balance
  from echovalue.logs where wallet_id = :w and endpoint = 'kv' order by id;
-- the proxy passes the requested path, query included
select status from echovalue.kv_set(token => :'tok', grp => 'g', key => 'k', value => 'v', ttl => '60',
                                    http_method => 'POST', http_path => '/kv/g/k?ttl=60');
select method, path from echovalue.logs where wallet_id = :w order by id desc limit 1;

-- limits: exactly 30 characters, 1000 characters of value (characters, not bytes)
select status, body from echovalue.kv_set(token => :'tok', grp => repeat('g', 30), key => repeat('k', 30), value => repeat('v', 1000));
select status, body from echovalue.kv_set(token => :'tok', grp => repeat('é', 30), key => repeat('ü', 30), value => repeat('€', 1000));
select status, char_length(body) as chars, octet_length(body) as bytes
  from echovalue.kv_get(token => :'tok', grp => repeat('é', 30), key => repeat('ü', 30));
-- a group may contain reserved- and --- elsewhere; a key may start with reserved-
select status from echovalue.kv_set(token => :'tok', grp => 'my-reserved-', key => 'reserved-k---', value => 'v');
select status from echovalue.kv_set(token => :'tok', grp => 'a--', key => 'k', value => 'v');

-- TTL: default and 0 mean 30 days; each write sets a new expiry; reads do not extend it
select status from echovalue.kv_set(token => :'tok', grp => 't', key => 'none', value => 'v');
select status from echovalue.kv_set(token => :'tok', grp => 't', key => 'zero', value => 'v', ttl => '0');
select status from echovalue.kv_set(token => :'tok', grp => 't', key => 'short', value => 'v', ttl => '30');
select status from echovalue.kv_set(token => :'tok', grp => 't', key => 'max', value => 'v', ttl => '2592000');
select status from echovalue.kv_set(token => :'tok', grp => 't', key => 'one', value => 'v', ttl => '1');
select status from echovalue.kv_set(token => :'tok', grp => 't', key => 'padded', value => 'v', ttl => '0030');
select key, expires_at - now() as ttl from echovalue.kv where wallet_id = :w and grp = 't' order by key;
update echovalue.kv set expires_at = now() + interval '5 seconds' where wallet_id = :w and grp = 't' and key = 'short';
select status, body from echovalue.kv_get(token => :'tok', grp => 't', key => 'short');
select expires_at - now() as ttl_after_read from echovalue.kv where wallet_id = :w and grp = 't' and key = 'short';
select status from echovalue.kv_set(token => :'tok', grp => 't', key => 'short', value => 'v2', ttl => '60');
select expires_at - now() as ttl_after_write from echovalue.kv where wallet_id = :w and grp = 't' and key = 'short';

-- an expired key is never served, even before maintenance purges it
update echovalue.kv set expires_at = now() - interval '1 microsecond' where wallet_id = :w and grp = 't' and key = 'one';
select status, body, cost from echovalue.kv_get(token => :'tok', grp => 't', key => 'one');
-- deleting an expired key is a 404 (and the row goes)
select status, body, cost from echovalue.kv_delete(token => :'tok', grp => 't', key => 'one');
select count(*) as expired_rows_left from echovalue.kv where wallet_id = :w and grp = 't' and key = 'one';
-- setting over an expired row replaces it with a fresh expiry
update echovalue.kv set expires_at = now() - interval '1 second' where wallet_id = :w and grp = 't' and key = 'none';
select status, body from echovalue.kv_set(token => :'tok', grp => 't', key => 'none', value => 'fresh', ttl => '10');
select status, body from echovalue.kv_get(token => :'tok', grp => 't', key => 'none');

-- another wallet cannot see this wallet's keys
select body as other from echovalue.token_new(client_addr => inet '192.0.2.11') \gset
select status, body from echovalue.kv_get(token => :'other', grp => 't', key => 'none');

-- rejected inputs: 400 with the rule, charged 1 credit and logged; nothing stored
select balance as before from echovalue.wallets where id = :w \gset
select count(*) as rows_before from echovalue.kv where wallet_id = :w \gset
select status, body, cost from echovalue.kv_set(token => :'tok', grp => '', key => 'k', value => 'v');
select status, body, cost from echovalue.kv_set(token => :'tok', grp => null, key => 'k', value => 'v');
select status, body, cost from echovalue.kv_set(token => :'tok', grp => repeat('g', 31), key => 'k', value => 'v');
select status, body, cost from echovalue.kv_set(token => :'tok', grp => 'g', key => '', value => 'v');
select status, body, cost from echovalue.kv_set(token => :'tok', grp => 'g', key => repeat('k', 31), value => 'v');
select status, body, cost from echovalue.kv_set(token => :'tok', grp => 'a/b', key => 'k', value => 'v');
select status, body, cost from echovalue.kv_set(token => :'tok', grp => 'g', key => 'a/b', value => 'v');
select status, body, cost from echovalue.kv_set(token => :'tok', grp => E'a\tb', key => 'k', value => 'v');
select status, body, cost from echovalue.kv_set(token => :'tok', grp => 'g', key => E'a\nb', value => 'v');
select status, body, cost from echovalue.kv_set(token => :'tok', grp => 'g', key => E'a\u007fb', value => 'v');
select status, body, cost from echovalue.kv_set(token => :'tok', grp => 'g', key => E'a\u0085b', value => 'v');
select status, body, cost from echovalue.kv_set(token => :'tok', grp => 'reserved-x', key => 'k', value => 'v');
select status, body, cost from echovalue.kv_set(token => :'tok', grp => 'reserved-', key => 'k', value => 'v');
select status, body, cost from echovalue.kv_set(token => :'tok', grp => 'x---', key => 'k', value => 'v');
select status, body, cost from echovalue.kv_set(token => :'tok', grp => 'g', key => 'k', value => repeat('v', 1001));
select status, body, cost from echovalue.kv_set(token => :'tok', grp => 'g', key => 'k', value => repeat('€', 1001));
select status, body, cost from echovalue.kv_set(token => :'tok', grp => 'g', key => 'k', value => null);
select status, body, cost from echovalue.kv_set(token => :'tok', grp => 'g', key => 'k', value => 'v', ttl => '-1');
select status, body, cost from echovalue.kv_set(token => :'tok', grp => 'g', key => 'k', value => 'v', ttl => '1.5');
select status, body, cost from echovalue.kv_set(token => :'tok', grp => 'g', key => 'k', value => 'v', ttl => 'abc');
select status, body, cost from echovalue.kv_set(token => :'tok', grp => 'g', key => 'k', value => 'v', ttl => '1e3');
select status, body, cost from echovalue.kv_set(token => :'tok', grp => 'g', key => 'k', value => 'v', ttl => '');
select status, body, cost from echovalue.kv_set(token => :'tok', grp => 'g', key => 'k', value => 'v', ttl => ' 5');
select status, body, cost from echovalue.kv_set(token => :'tok', grp => 'g', key => 'k', value => 'v', ttl => '+5');
select status, body, cost from echovalue.kv_set(token => :'tok', grp => 'g', key => 'k', value => 'v', ttl => '2592001');
select status, body, cost from echovalue.kv_set(token => :'tok', grp => 'g', key => 'k', value => 'v', ttl => '99999999999999999999');
select status, body, cost from echovalue.kv_get(token => :'tok', grp => 'g', key => '');
select status, body, cost from echovalue.kv_get(token => :'tok', grp => 'reserved-x', key => 'k');
select status, body, cost from echovalue.kv_delete(token => :'tok', grp => 'g', key => repeat('k', 31));
select status, body, cost from echovalue.kv_delete(token => :'tok', grp => 'x---', key => 'k');
select :before - balance as charged, (select count(*) from echovalue.kv where wallet_id = :w) - :rows_before as new_rows
  from echovalue.wallets where id = :w;
select status_code, error, cost from echovalue.logs where wallet_id = :w order by id desc limit 3;

-- a bad token is 401 before any validation, and nothing is logged
select status, body, cost, balance from echovalue.kv_set(token => 'nope', grp => '', key => '', value => null);
select status, body, cost, balance from echovalue.kv_get(token => null, grp => 'g', key => 'k');
select status, body, cost, balance from echovalue.kv_delete(token => 'x', grp => 'g', key => 'k');

-- the limits are settings
set local echovalue.max_name_chars = 3;
set local echovalue.max_value_chars = 2;
set local echovalue.max_ttl_seconds = 10;
select status, body from echovalue.kv_set(token => :'tok', grp => 'abcd', key => 'k', value => 'v');
select status, body from echovalue.kv_set(token => :'tok', grp => 'abc', key => 'k', value => 'vvv');
select status, body from echovalue.kv_set(token => :'tok', grp => 'abc', key => 'k', value => 'vv', ttl => '11');
select status, body from echovalue.kv_set(token => :'tok', grp => 'abc', key => 'k', value => 'vv');
select expires_at - now() as ttl from echovalue.kv where wallet_id = :w and grp = 'abc';
rollback;
