-- The routing check of the scale-out suite (tests/citus.sh, suite `routing`), run by psql on
-- the coordinator after echovalue.distribute(): every distributed API function, called as
-- the proxy calls it (a prepared statement with `wallet => echovalue.token_wallet($1)`), for
-- a wallet on each worker; the mailhook's calls (`wallet => echovalue.recipient_wallet($1)`)
-- for the wallet's mailbox address, and webhook_test_result (`wallet =>
-- echovalue.test_wallet($1)`) for an await value of the wallet, and delivery_record with a
-- wallet's id as the mailhook passes its claim's. For each it prints `=<function>|<node of the wallet>`, then the
-- EXPLAIN of the call; citus.sh checks that each shows one task on that node. The calls are
-- top-level statements (\gexec), as the proxy's are: Citus delegates a call made inside a
-- function or a transaction block only with force_delegation, which is not set.
\set ON_ERROR_STOP 1
set client_min_messages = warning;
set echovalue.token_rate_seconds = 0;
create temp table routing_wallets (token text, node text, email text, await text);
do $$
declare
    v_token text;
    v_node text;
    v_i int := 0;
begin
    -- wallets until one lives on each worker (their ids are random, so a few suffice)
    while v_i < 64 and (select pg_catalog.count(*) from routing_wallets)
                       < (select pg_catalog.count(*) from pg_catalog.pg_dist_node n
                           where n.noderole = 'primary' and n.shouldhaveshards and n.groupid > 0) loop
        v_i := v_i + 1;
        select o.body into v_token
          from echovalue.token_new(client_addr => ('198.51.100.' || v_i)::inet) o where o.status = 200;
        continue when v_token is null;
        select n.nodename || ':' || n.nodeport into v_node
          from pg_catalog.pg_dist_placement p
          join pg_catalog.pg_dist_node n on n.groupid = p.groupid
         where p.shardid = get_shard_id_for_distribution_column('echovalue.wallets',
                                                               echovalue.token_wallet(v_token));
        if not exists (select from routing_wallets r where r.node = v_node) then
            insert into routing_wallets
            select v_token, v_node, (echovalue.webhook_get(token => v_token)).body::json ->> 'email',
                   echovalue.token_wallet(v_token) || ':1:msg_' || pg_catalog.repeat('0', 32);
        end if;
    end loop;
end;
$$;
select '=workers|' || pg_catalog.count(*) from routing_wallets;

-- per function: prepare it (tests/citus_calls.sql), then per wallet a label and the plan,
-- then deallocate
\ir citus_calls.sql
with functions as (
    select p.proname, 'prepare routing_call(text) as ' || pg_temp.routed_call(o.objid::regprocedure, '$1') as prepare
      from pg_catalog.pg_dist_object o
      join pg_catalog.pg_proc p on p.oid = o.objid
     where o.classid = 'pg_catalog.pg_proc'::regclass and o.distribution_argument_index is not null
)
select s from functions f
 cross join lateral (
     select f.prepare as s, 0 as k, '' as node
     union all
     select pg_catalog.format('select %L', '=' || f.proname || '|' || r.node), 1, r.node from routing_wallets r
     union all
     select pg_catalog.format('explain (costs off) execute routing_call(%L)',
                              pg_temp.routed_arg(f.proname, r.token, r.email, r.await)), 2, r.node
       from routing_wallets r
     union all
     select 'deallocate routing_call', 3, ''
 ) c
 order by f.proname, case c.k when 0 then 0 when 3 then 2 else 1 end, c.node, c.k
\gexec
