-- The memory check of the scale-out suite (tests/citus.sh, suite `memory`), run by psql on a
-- worker: every delegated API function, called as the proxy calls it (a top-level statement
-- with the routing hint) for a wallet whose shard is on this worker, so that its statements
-- run by Citus's local execution, must leave the connection's memory as it was. Citus 13.2.2
-- keeps a new local plan per execution of a statement whose generic plan Postgres reuses
-- (distribute.sql: echovalue.distribute() sets plan_cache_mode = force_custom_plan on these
-- functions); that is some 50 to 150 kB per call, so 3 MB and more over 60 calls (a pass: less
-- than 1 MB, for memory a context keeps once). Each function is called 8 times first
-- (Postgres decides on a generic plan after 5), then the memory of all this backend's contexts
-- is read, the function called 60 times more, and read again. Prints one `ok`/`FAIL` line per
-- function; tests/citus.sh counts them. The other arguments are NULL where they have no default
-- (as in tests/citus_routing.sql): a call answered 400 still reads the token, charges and logs.
\set ON_ERROR_STOP 1
set client_min_messages = warning;
set echovalue.token_rate_seconds = 0;
create temp table memory_wallet (token text, email text, await text);
create temp table memory_read (proname text, k int, bytes bigint);
do $$
declare
    v_token text;
    v_i int := 0;
begin
    -- a wallet on this node (the ids are random, so a few tries suffice)
    while v_i < 64 loop
        v_i := v_i + 1;
        select o.body into v_token
          from echovalue.token_new(client_addr => ('198.51.100.' || v_i)::inet) o where o.status = 200;
        continue when v_token is null;
        if exists (select from pg_catalog.pg_dist_placement p
                    where p.groupid = (select l.groupid from pg_catalog.pg_dist_local_group l)
                      and p.shardid = get_shard_id_for_distribution_column('echovalue.wallets',
                                                                           echovalue.token_wallet(v_token))) then
            insert into memory_wallet
            select v_token, (echovalue.webhook_get(token => v_token)).body::json ->> 'email',
                   echovalue.token_wallet(v_token) || ':1:msg_' || pg_catalog.repeat('0', 32);
            return;
        end if;
    end loop;
    raise exception 'no wallet on this node in 64 tries';
end;
$$;

\o /dev/null
with functions as (
    select p.proname, case when p.proname = 'delivery_record'  -- (the mailhook's; no such delivery)
        then pg_catalog.format('select * from echovalue.delivery_record(delivery_id => 0, attempt => 1, '
                               'outcome => ''failed'', wallet => echovalue.token_wallet(%L))', w.token)
        else pg_catalog.format(
               'select * from echovalue.%I(%I => %L%s, wallet => echovalue.%s(%3$L))',
               p.proname, p.proargnames[1],
               case p.proargnames[1] when 'recipient' then w.email when 'test' then w.await else w.token end,
               case when p.proname = 'request_refuse'  -- (it takes no NULL status)
                    then ', route => ''kv'', status => 400, error => ''Bad Request: x'', http_method => ''GET'', http_path => ''/kv/g/k'''
               else coalesce((select pg_catalog.string_agg(pg_catalog.format(', %I => null::%s', p.proargnames[i],
                                                                        pg_catalog.format_type(p.proargtypes[i - 1], null)), '' order by i)
                           from pg_catalog.generate_series(2, p.pronargs - p.pronargdefaults) i), '') end,
               case p.proargnames[1] when 'recipient' then 'recipient_wallet'
                                     when 'test' then 'test_wallet' else 'token_wallet' end) end as call
      from pg_catalog.pg_dist_object o
      join pg_catalog.pg_proc p on p.oid = o.objid
     cross join memory_wallet w
     where o.classid = 'pg_catalog.pg_proc'::regclass and o.distribution_argument_index is not null
)
select s from functions f
 cross join lateral (
     select f.call as s, g as n from pg_catalog.generate_series(1, 8) g
     union all
     select pg_catalog.format('insert into memory_read select %L, 1, pg_catalog.sum(c.total_bytes) from pg_catalog.pg_backend_memory_contexts c',
                              f.proname), 9
     union all
     select f.call, 9 + g from pg_catalog.generate_series(1, 60) g
     union all
     select pg_catalog.format('insert into memory_read select %L, 2, pg_catalog.sum(c.total_bytes) from pg_catalog.pg_backend_memory_contexts c',
                              f.proname), 70
 ) c
 order by f.proname, c.n
\gexec
\o

select case when a.bytes - b.bytes < 1024 * 1024 then 'ok    ' else 'FAIL  ' end
       || pg_catalog.format('%s: %s bytes more after 60 calls', b.proname, a.bytes - b.bytes)
  from memory_read b join memory_read a on a.proname = b.proname and a.k = 2
 where b.k = 1
 order by b.proname;
