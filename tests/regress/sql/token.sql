-- token_new, wallet_get and token validation.
\set VERBOSITY terse
begin;
set local echovalue.token_rate_seconds = 0;

-- happy path: a root token of the documented format and a wallet of 100 credits
select status, content_type, cost, balance, headers, length(body) as len,
       body ~ '^ev_tok_sk_live_[0-9a-z]{38}$' as shaped, echovalue.token_format_ok(body) as format_ok
  from echovalue.token_new(client_addr => inet '192.0.2.1');
select body as tok from echovalue.token_new(client_addr => inet '192.0.2.2') \gset
select body as tok2 from echovalue.token_new(client_addr => inet '192.0.2.3') \gset
select :'tok' <> :'tok2' as tokens_differ;

-- only the SHA-256 of the token is stored
select t.is_root, t.label, t.revoked is null as live,
       w.hash = encode(sha256(convert_to(:'tok', 'UTF8')), 'hex') as wallet_hash_is_sha256
  from echovalue.tokens t join echovalue.wallets w on w.id = t.wallet_id
 where t.hash = sha256(convert_to(:'tok', 'UTF8'));
select count(*) as rows_holding_raw_token
  from echovalue.wallets w join echovalue.tokens t on t.wallet_id = w.id
 where w.hash = :'tok' or t.hash = convert_to(:'tok', 'UTF8') or t.label = :'tok';

-- the creation is logged, free, on endpoint token
select l.method, l.path, l.endpoint, l.status_code, l.error, l.cost, l.balance
  from echovalue.logs l join echovalue.tokens t on t.wallet_id = l.wallet_id
 where t.hash = sha256(convert_to(:'tok', 'UTF8'));

-- wallet_get: compact JSON, wallet = balance after the charge, RFC 3339 created, sha256 hash
select status, content_type, cost, balance,
       body ~ '^\{"wallet":99,"created":"[^"]+","hash":"[0-9a-f]{64}"\}$' as compact_shape,
       (body::jsonb ->> 'wallet')::bigint = balance as wallet_is_balance,
       (body::jsonb ->> 'created') ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$' as created_rfc3339,
       body::jsonb ->> 'hash' = encode(sha256(convert_to(:'tok', 'UTF8')), 'hex') as hash_ok
  from echovalue.wallet_get(token => :'tok');
select status, cost, balance, (body::jsonb ->> 'wallet') as wallet
  from echovalue.wallet_get(token => :'tok', http_method => 'GET', http_path => '/');
select l.method, l.path, l.endpoint, l.status_code, l.cost, l.balance
  from echovalue.logs l join echovalue.tokens t on t.wallet_id = l.wallet_id
 where t.hash = sha256(convert_to(:'tok', 'UTF8'))
 order by l.id;
-- the other wallet was not touched
select status, balance from echovalue.wallet_get(token => :'tok2');

-- token format: prefix, length 53, lowercase base36, checksum
select echovalue.token_format_ok(:'tok') as good,
       echovalue.token_format_ok(upper(:'tok')) as upper_case,
       echovalue.token_format_ok(left(:'tok', 52)) as short,
       echovalue.token_format_ok(:'tok' || 'a') as long,
       echovalue.token_format_ok(overlay(:'tok' placing 'x' from 1 for 1)) as bad_prefix,
       echovalue.token_format_ok(overlay(:'tok' placing
           case when substr(:'tok', 20, 1) = 'a' then 'b' else 'a' end from 20 for 1)) as typo,
       echovalue.token_format_ok(overlay(:'tok' placing
           case when substr(:'tok', 50, 1) = 'a' then 'b' else 'a' end from 50 for 1)) as bad_checksum,
       echovalue.token_format_ok('') as empty,
       echovalue.token_format_ok(null) is null as strict;
-- rejected tokens: 401, no cost, no balance, not logged
select count(*) as logs_before from echovalue.logs \gset
select status, body, content_type, cost, balance, headers from echovalue.wallet_get(token => null);
select status, body, cost, balance from echovalue.wallet_get(token => '');
select status, body, cost, balance from echovalue.wallet_get(token => 'mytoken');
select status, body, cost, balance from echovalue.wallet_get(token => upper(:'tok'));
-- well formed but never issued: with the key of an existing wallet, and of no wallet
select status, body, cost, balance
  from echovalue.wallet_get(token => echovalue._token_generate(echovalue.token_wallet(:'tok')));
select status, body, cost, balance from echovalue.wallet_get(token => echovalue._token_generate(0));
-- revoked
update echovalue.tokens set revoked = now() where hash = sha256(convert_to(:'tok2', 'UTF8'));
select status, body, cost, balance from echovalue.wallet_get(token => :'tok2');
select count(*) - :logs_before as new_log_rows from echovalue.logs;
rollback;

-- the wallet key: the first 8 of the 32 characters are the wallet's id in base36, zero-padded,
-- the same in every token of the wallet
begin;
set local echovalue.token_rate_seconds = 0;
select body as tok from echovalue.token_new(client_addr => inet '192.0.2.4') \gset
select body as tok2 from echovalue.token_new(client_addr => inet '192.0.2.5') \gset
select wallet_id as w from echovalue.tokens where hash = sha256(convert_to(:'tok', 'UTF8')) \gset
select wallet_id as w2 from echovalue.tokens where hash = sha256(convert_to(:'tok2', 'UTF8')) \gset
select echovalue.token_wallet(:'tok') = :w as key_is_wallet,
       lpad(substr(:'tok', 16, 8), 8, '0') = substr(:'tok', 16, 8) as eight_chars,
       :w between 1 and 2821109907455 as id_in_range,
       echovalue.token_wallet(:'tok2') = :w2 as other_key_is_other_wallet,
       :w <> :w2 as wallets_differ,
       echovalue.token_wallet(upper(:'tok')) is null as malformed_names_none,
       echovalue.token_wallet('') is null as empty_names_none,
       echovalue.token_wallet(null) is null as strict;
select body::json ->> 'token' as sub from echovalue.token_key_create(token => :'tok') \gset
select substr(:'sub', 16, 8) = substr(:'tok', 16, 8) as shares_the_key,
       substr(:'sub', 24, 24) <> substr(:'tok', 24, 24) as random_part_differs,
       echovalue.token_format_ok(:'sub') as format_ok;
select status from echovalue.wallet_get(token => :'sub');
-- the wallet argument only routes (on Citus): the token alone decides whose wallet it is, so
-- another wallet's id, or none, changes nothing
select k.status, k.balance = b.balance - 1 as charged_own_wallet
  from (select balance from echovalue.wallets where id = :w) b,
       echovalue.kv_set(token => :'tok', grp => 'g', key => 'k', value => 'v', wallet => :w2) k;
select status, body from echovalue.kv_get(token => :'tok', grp => 'g', key => 'k', wallet => 0);
select (select balance from echovalue.wallets where id = :w2) = 100 as other_wallet_untouched;
-- an id outside the key's range has no token
savepoint out_of_range;
select echovalue._token_generate(2821109907456);
rollback to out_of_range;
select echovalue._token_generate(-1);
rollback to out_of_range;

-- a token made before 0.9.0 (its 32 characters random, so its key names no wallet of it, or
-- another wallet) is found through token_legacy; without its row there it is unknown
select echovalue._token_generate(:w2) as old \gset
insert into echovalue.tokens (wallet_id, hash, is_root, label, prefix, scopes)
values (:w, sha256(convert_to(:'old', 'UTF8')), false, 'old', '', '{wallet}');
select status, cost, balance from echovalue.wallet_get(token => :'old');
insert into echovalue.token_legacy values (sha256(convert_to(:'old', 'UTF8')), :w);
select status, cost, balance, (select balance from echovalue.wallets where id = :w2) as other_untouched
  from echovalue.wallet_get(token => :'old');
update echovalue.tokens set revoked = now() where hash = sha256(convert_to(:'old', 'UTF8'));
select status from echovalue.wallet_get(token => :'old');
-- a legacy row naming another wallet does not open the token
update echovalue.tokens set revoked = null where hash = sha256(convert_to(:'old', 'UTF8'));
update echovalue.token_legacy set wallet_id = :w2;
select status from echovalue.wallet_get(token => :'old');
rollback;

-- rate limit: one token per echovalue.token_rate_seconds per client address
begin;
set local echovalue.token_rate_seconds = 10;
select status, cost, balance from echovalue.token_new(client_addr => inet '198.51.100.7');
select status, body, content_type, cost, balance, headers
  from echovalue.token_new(client_addr => inet '198.51.100.7');
select status from echovalue.token_new(client_addr => inet '198.51.100.8');
select status from echovalue.token_new(client_addr => inet '2001:db8::1');
select status, headers from echovalue.token_new(client_addr => inet '2001:db8::1');
-- callers without an address (unix socket) share one bucket
select status from echovalue.token_new(client_addr => null);
select status, headers from echovalue.token_new(client_addr => null);
-- once the window has passed the address may create again; retry-after counts down
update echovalue.token_rate set last_at = now() - interval '3.5 seconds'
 where client = inet '198.51.100.7';
select status, headers from echovalue.token_new(client_addr => inet '198.51.100.7');
update echovalue.token_rate set last_at = now() - interval '10 seconds'
 where client = inet '198.51.100.7';
select status from echovalue.token_new(client_addr => inet '198.51.100.7');
-- an IPv6 client holds a /64: another address in it is the same client; another /64 is not
select status from echovalue.token_new(client_addr => inet '2001:db8::ffff:1');
select status from echovalue.token_new(client_addr => inet '2001:db8:0:0:8000::9');
select status from echovalue.token_new(client_addr => inet '2001:db8:0:1::1');
select client from echovalue.token_rate where client <<= inet '2001:db8::/32' order by client;
-- an IPv4 address mapped into IPv6 (as a dual-stack listener reports it) is that IPv4 address,
-- not one /64 shared by every IPv4 client
select status from echovalue.token_new(client_addr => inet '::ffff:198.51.100.30');
select status from echovalue.token_new(client_addr => inet '::ffff:198.51.100.31');
select status from echovalue.token_new(client_addr => inet '::ffff:198.51.100.30');
-- the prefix lengths are settings
set local echovalue.token_rate_ipv4_prefix = 24;
select status from echovalue.token_new(client_addr => inet '203.0.113.1');
select status from echovalue.token_new(client_addr => inet '203.0.113.200');
set local echovalue.token_rate_ipv6_prefix = 128;
select status from echovalue.token_new(client_addr => inet '2001:db8:0:2::1');
select status from echovalue.token_new(client_addr => inet '2001:db8:0:2::2');
select count(*) as wallets_created from echovalue.wallets where created = now();
rollback;

-- the starting credits are a setting
begin;
set local echovalue.token_rate_seconds = 0;
set local echovalue.start_credits = 7;
select status, cost, balance from echovalue.token_new(client_addr => inet '192.0.2.9');
rollback;
