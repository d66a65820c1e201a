-- The memory check of the scale-out suite (tests/citus.sh, suite `memory`), run by psql on a
-- worker: every delegated API function, called as the proxy calls it (tests/citus_calls.sql)
-- for a wallet whose shard is on this worker, so that its statements run by Citus's local
-- execution, must leave the connection's memory as it was. Citus 13.2.2 keeps a new local plan
-- per execution of a statement whose generic plan Postgres reuses (distribute.sql:
-- echovalue.distribute() sets plan_cache_mode = force_custom_plan on these functions); that is
-- some 50 to 150 kB per call, so 3 MB and more over 60 calls. Each function is called 8 times
-- first (Postgres decides on a generic plan after 5), then the memory of all this backend's
-- contexts is read, and twice the function is called 60 times more and the memory read again.
-- A leak grows in both rounds; memory taken once grows in one (the first call down a path
-- compiles its functions and plans: the first 402 of a wallet that ran out of credits took
-- 2.4 MB). A pass: one of the rounds grew by less than 1 MB. The wallet has credits for every
-- call, so that each runs its statements, not the 402's. Prints one `ok`/`FAIL` line per function, with both rounds' growth;
-- tests/citus.sh counts them.
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
            update echovalue.wallets set balance = 1000000
             where id = echovalue.token_wallet(v_token);
            insert into memory_wallet
            select v_token, (echovalue.webhook_get(token => v_token)).body::json ->> 'email',
                   echovalue.token_wallet(v_token) || ':1:msg_' || pg_catalog.repeat('0', 32);
            return;
        end if;
    end loop;
    raise exception 'no wallet on this node in 64 tries';
end;
$$;

\ir citus_calls.sql
\o /dev/null
with functions as (
    select p.proname,
           pg_temp.routed_call(o.objid::regprocedure,
                               pg_catalog.quote_nullable(pg_temp.routed_arg(p.proname, w.token, w.email, w.await)))
               as call
      from pg_catalog.pg_dist_object o
      join pg_catalog.pg_proc p on p.oid = o.objid
     cross join memory_wallet w
     where o.classid = 'pg_catalog.pg_proc'::regclass and o.distribution_argument_index is not null
),
reads as (
    select f.proname, k,
           pg_catalog.format('insert into memory_read select %L, %s, pg_catalog.sum(c.total_bytes) '
                             'from pg_catalog.pg_backend_memory_contexts c', f.proname, k) as s
      from functions f cross join pg_catalog.generate_series(0, 2) k
)
select s from functions f
 cross join lateral (
     select f.call as s, g - 9 as n from pg_catalog.generate_series(1, 8) g   -- warm-up
     union all
     select r.s, 61 * r.k from reads r where r.proname = f.proname         -- reads at 0, 61, 122
     union all
     select f.call, g + (g - 1) / 60 from pg_catalog.generate_series(1, 120) g -- 1..60, 62..121
 ) c
 order by f.proname, c.n
\gexec
\o

select case when least(r1.bytes - r0.bytes, r2.bytes - r1.bytes) < 1024 * 1024
            then 'ok    ' else 'FAIL  ' end
       || pg_catalog.format('%s: %s and %s bytes more after 60 calls', r0.proname,
                            r1.bytes - r0.bytes, r2.bytes - r1.bytes)
  from memory_read r0
  join memory_read r1 on r1.proname = r0.proname and r1.k = 1
  join memory_read r2 on r2.proname = r0.proname and r2.k = 2
 where r0.k = 0
 order by r0.proname;
