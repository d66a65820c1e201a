-- kv_list and kv_groups (SPEC section 17): order, pages, prefixes, expiry, every refusal,
-- scopes and groups, and that a page reads O(limit) keys however large the group.
\set VERBOSITY terse
begin;
set local echovalue.token_rate_seconds = 0;
select body as tok from echovalue.token_new(client_addr => inet '192.0.2.60') \gset
select wallet_id as w from echovalue.tokens where hash = sha256(convert_to(:'tok', 'UTF8')) \gset
update echovalue.wallets set balance = 100000 where id = :w;
-- a body with its (time-dependent) expiries masked
create function pg_temp.masked(p_body text) returns text language sql as $$
    select regexp_replace(p_body, '"expires":"[0-9T:.-]+Z"', '"expires":"…"', 'g')
$$;

select count(*) from (
    select echovalue.kv_set(token => :'tok', grp => 'g', key => k, value => 'v')
      from unnest(array['b', 'a', 'user-2', 'user-10', 'user-1', 'user', 'usf', 'é', 'z', 'Z',
                        'u' || chr(1114111), chr(1114111) || 'x']) k) s;
select status from echovalue.kv_set(token => :'tok', grp => 'other', key => 'k', value => 'v', ttl => '60');
-- every live key of the group in code point order, with the expiry as stored
select status, pg_temp.masked(body), content_type, cost, balance
  from echovalue.kv_list(token => :'tok', grp => 'g');
select (body::json -> 'keys' -> 0 ->> 'expires') = echovalue._ts(k.expires_at) as expiry_as_stored
  from echovalue.kv_list(token => :'tok', grp => 'other'), echovalue.kv k
 where k.wallet_id = :w and k.grp = 'other';
-- a prefix is a range; the last key of a prefix whose end is past U+10FFFF is still found
select pg_temp.masked(body) from echovalue.kv_list(token => :'tok', grp => 'g', prefix => 'user');
select pg_temp.masked(body) from echovalue.kv_list(token => :'tok', grp => 'g', prefix => 'u' || chr(1114111));
select pg_temp.masked(body) from echovalue.kv_list(token => :'tok', grp => 'g', prefix => 'nothing');
-- pages of 5, followed to the end: each key once, in order
select set_config('ev.tok', :'tok', true) is not null as set;
create temp table pages (n int, body json);
do $$
declare
    v_cursor text;
    v_n int := 0;
    v_body text;
begin
    loop
        select body into v_body from echovalue.kv_list(token => current_setting('ev.tok'), grp => 'g',
                                                       cursor => v_cursor, page_size => '5');
        v_n := v_n + 1;
        insert into pages values (v_n, v_body::json);
        v_cursor := v_body::json ->> 'cursor';
        exit when v_cursor is null or v_n > 10;
    end loop;
end $$ ;
select n, json_array_length(body -> 'keys') as keys, body ->> 'cursor' as cursor from pages order by n;
select string_agg(k ->> 'key', ' ' order by n, o) as every_key_once
  from pages, json_array_elements(body -> 'keys') with ordinality e(k, o);
-- limit as text: '' is the default, leading zeros are fine, the maximum is the setting
select json_array_length(body::json -> 'keys') from echovalue.kv_list(token => :'tok', grp => 'g', page_size => '');
select json_array_length(body::json -> 'keys') from echovalue.kv_list(token => :'tok', grp => 'g', page_size => '0003');
select status, json_array_length(body::json -> 'keys') from echovalue.kv_list(token => :'tok', grp => 'g', page_size => '1000');
-- an expired key is never listed, purged or not; a missing group is an empty page
update echovalue.kv set expires_at = now() - interval '1 second' where wallet_id = :w and grp = 'g' and key = 'a';
select pg_temp.masked(body) from echovalue.kv_list(token => :'tok', grp => 'g', page_size => '2');
select status, body from echovalue.kv_list(token => :'tok', grp => 'none');
-- a cursor from before its key was deleted still continues after it
select body::json ->> 'cursor' as c from echovalue.kv_list(token => :'tok', grp => 'g', page_size => '2') \gset
select status from echovalue.kv_delete(token => :'tok', grp => 'g', key => 'Z');
select pg_temp.masked(body) from echovalue.kv_list(token => :'tok', grp => 'g', cursor => :'c', page_size => '2');

-- refusals: each a charged 400, logged, checked in this order
select balance as before from echovalue.wallets where id = :w \gset
select status, body, cost from echovalue.kv_list(token => :'tok', grp => 'reserved-x');
select status, body, cost from echovalue.kv_list(token => :'tok', grp => '');
select status, body, cost from echovalue.kv_list(token => :'tok', grp => 'g', prefix => 'a/b');
select status, body, cost from echovalue.kv_list(token => :'tok', grp => 'g', prefix => repeat('p', 31));
select status, body, cost from echovalue.kv_list(token => :'tok', grp => 'g', prefix => E'a\tb');
select status, body, cost from echovalue.kv_list(token => :'tok', grp => 'g', cursor => 'not a cursor');
select status, body, cost from echovalue.kv_list(token => :'tok', grp => 'g', cursor => repeat('A', 100000));
-- a cursor of another group, of the groups listing, or forged over a refused name
select status, body from echovalue.kv_list(token => :'tok', grp => 'other', cursor => :'c');
select status, body from echovalue.kv_list(token => :'tok', grp => 'g', cursor => echovalue._cursor('g', null, 'g'));
select status, body from echovalue.kv_list(token => :'tok', grp => 'g', cursor => echovalue._cursor('k', 'g', 'a/b'));
select status, body from echovalue.kv_list(token => :'tok', grp => 'g', cursor => rtrim(encode(convert_to('k' || chr(31) || 'g', 'UTF8'), 'base64'), '='));
select status, body, cost from echovalue.kv_list(token => :'tok', grp => 'g', page_size => '0');
select status, body, cost from echovalue.kv_list(token => :'tok', grp => 'g', page_size => '1001');
select status, body, cost from echovalue.kv_list(token => :'tok', grp => 'g', page_size => '-1');
select status, body, cost from echovalue.kv_list(token => :'tok', grp => 'g', page_size => '1.5');
select status, body, cost from echovalue.kv_list(token => :'tok', grp => 'g', page_size => repeat('9', 40));
select :before - balance as charged from echovalue.wallets where id = :w;
select method, path, endpoint, status_code, error, cost from echovalue.logs
 where wallet_id = :w order by id desc limit 3;
select status, body, cost, balance from echovalue.kv_list(token => 'ev_nope', grp => 'g');

-- the groups: live keys counted, a group of only expired keys left out
select status from echovalue.kv_set(token => :'tok', grp => 'gone', key => 'k', value => 'v');
update echovalue.kv set expires_at = now() - interval '1 second' where wallet_id = :w and grp = 'gone';
select status, body, content_type, cost from echovalue.kv_groups(token => :'tok');
select body from echovalue.kv_groups(token => :'tok', page_size => '1');
select body from echovalue.kv_groups(token => :'tok', page_size => '1',
    cursor => (select body::json ->> 'cursor' from echovalue.kv_groups(token => :'tok', page_size => '1')));
select body from echovalue.kv_groups(token => :'tok', prefix => 'o');
select status, body from echovalue.kv_groups(token => :'tok', cursor => :'c');
select status, body from echovalue.kv_groups(token => :'tok', prefix => '/');
select status, body from echovalue.kv_groups(token => :'tok', page_size => 'x');
select path, endpoint, status_code, cost from echovalue.logs where wallet_id = :w order by id desc limit 1;

-- scopes and groups: kv:read lists; a token limited to groups lists those only
select body::json ->> 'token' as only_g from echovalue.token_key_create(token => :'tok',
    spec => '{"scopes":["kv:read"],"groups":["g","gone","absent"]}') \gset
select body::json ->> 'token' as writer from echovalue.token_key_create(token => :'tok',
    spec => '{"scopes":["kv:write"]}') \gset
select status, pg_temp.masked(body) from echovalue.kv_list(token => :'only_g', grp => 'g', page_size => '1');
select status, body, cost from echovalue.kv_list(token => :'only_g', grp => 'other');
select status, body from echovalue.kv_groups(token => :'only_g');
select status, body, cost from echovalue.kv_list(token => :'writer', grp => 'g');
select status, body, cost from echovalue.kv_groups(token => :'writer');

-- an empty wallet: 402, nothing listed
update echovalue.wallets set balance = 0 where id = :w;
select status, body, cost, balance from echovalue.kv_list(token => :'tok', grp => 'g');
select status, body, cost, balance from echovalue.kv_groups(token => :'tok');
update echovalue.wallets set balance = 100000 where id = :w;

-- a page of 10 reads about 10 keys of a group of 3,000 (index tuples of this transaction)
select count(*) from (select echovalue.kv_set(token => :'tok', grp => 'big', key => 'k' || lpad(i::text, 5, '0'), value => 'v')
                        from generate_series(1, 3000) i) s;
select pg_stat_get_xact_tuples_returned('echovalue.kv_pkey'::regclass) as before_read \gset
select status, json_array_length(body::json -> 'keys') as keys, body::json ->> 'cursor' is not null as more
  from echovalue.kv_list(token => :'tok', grp => 'big', prefix => 'k01', cursor => echovalue._cursor('k', 'big', 'k01500'), page_size => '10');
select pg_stat_get_xact_tuples_returned('echovalue.kv_pkey'::regclass) - :before_read <= 12 as read_about_a_page;
select pg_stat_get_xact_tuples_returned('echovalue.kv_pkey'::regclass) as before_read \gset
select status, body from echovalue.kv_groups(token => :'tok', prefix => 'b', page_size => '1');
select pg_stat_get_xact_tuples_returned('echovalue.kv_pkey'::regclass) - :before_read as groups_read;
-- names sort by code point whatever the database's collation
select attname, collname from pg_attribute a join pg_collation c on c.oid = a.attcollation
 where attrelid = 'echovalue.kv'::regclass and attname in ('grp', 'key') order by attname;
rollback;
