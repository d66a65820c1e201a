-- Scale-out on Citus (SPEC section 18). echovalue.distribute(), run once by a superuser on a
-- Citus coordinator where the extension is installed (the workers added first or later), turns
-- the single-node install, fresh or holding data, into a distributed one:
--   - every wallet's table is distributed by the wallet (wallets by id, the others by
--     wallet_id), colocated, so the rows of a wallet live on one node;
--   - the small shared tables are reference tables, a copy on every node: prices, recharge
--     tiers, the installation keys, the relay, the old tokens' and old mailboxes' wallets
--     (token_legacy, mailbox_legacy), the token_new rate rows and the Stripe events (their
--     unique id and the unique applied session stay exact: a reference table enforces its
--     unique keys, so a Stripe event credits once);
--   - the unique indexes on an id alone (messages, attachments, deliveries) and on a mailbox
--     address become plain indexes, because Citus enforces only unique keys that hold the
--     distribution column. Those values stay unique by construction: a mailbox address is its
--     wallet's key and 96 random bits, and each node draws ids from its own range of every
--     identity sequence (_node_sequences: a delegated call writes its rows on a worker, with
--     that worker's sequence);
--   - every API function that takes a token is delegated to the node that holds its wallet:
--     Citus routes a call by its `wallet` argument (the proxy passes
--     echovalue.token_wallet(token), a constant once the token is bound; the mailhook passes
--     echovalue.recipient_wallet(recipient) to mail_rcpt_check and mail_receive and its
--     claim's wallet to delivery_record, and the proxy echovalue.test_wallet(test) to
--     webhook_test_result), and the function
--     runs there whole, each statement on that node's shards. A call without the argument,
--     or with a wrong one (a token made before 0.9.0, whose key names no wallet), is answered
--     right all the same: it runs where it was sent, or on the wrong node, and its statements
--     are routed one by one. So is a call inside a transaction block (the proxy's group
--     commit), which Citus delegates only with force_delegation; that flag is not set,
--     because it also makes Citus refuse every statement of the call on another wallet than
--     the hint's, which an old token's call needs;
--   - the restore triggers of prices, tiers and installation keys are dropped: Citus copies a
--     reference table through them, and a distributed database is backed up with Citus's own
--     tools, not pg_dump of one node.
--   - every delegated API function runs with plan_cache_mode = force_custom_plan, unless
--     distribute(plan_cache_mode => 'auto') is asked for. On a worker, a statement of a
--     delegated call on its wallet's shard runs by Citus's local execution; once Postgres
--     keeps the generic plan of a statement, Citus 13.2.2 plans the shard query anew at every
--     execution and adds that plan to a list it never frees (it looks the plan up in a task
--     list that deferred pruning leaves empty; fixed upstream, citusdata/citus#8824): about
--     150 kB more per call in every connection, until the node runs out of memory. Custom
--     plans never enter that cache. With a Citus that has the fix, 'auto' costs less
--     (bench/RESULTS.md).
-- It is idempotent: a table already distributed is left as it is, and it is run again after
-- ALTER EXTENSION echovalue UPDATE (an update replaces functions and their settings).

-- Whether echovalue.<p_table> is a Citus table already (plpgsql: the body names a Citus
-- catalog, which a database without Citus does not have, and is only planned when it runs).
create function echovalue._distributed(p_table text) returns boolean
language plpgsql stable as $$
begin
    return exists (select from pg_catalog.pg_dist_partition p
                    where p.logicalrelid = ('echovalue.' || p_table)::regclass);
end;
$$;

-- The ids a node draws: group g (pg_dist_local_group; the coordinator is 0) takes every
-- identity sequence of echovalue to g·2^48, so each node has 2^48 ids of its own for each
-- table and the rows written on different nodes never share an id. A sequence already past
-- its node's start is left alone. Returns how many sequences moved.
create function echovalue._node_sequences() returns int
language plpgsql volatile as $$
declare
    v_start bigint;
    v_sequence text;
    v_moved int := 0;
begin
    select l.groupid::bigint << 48 into v_start from pg_catalog.pg_dist_local_group l;
    for v_sequence in
        select pg_catalog.format('%I.%I', s.schemaname, s.sequencename) from pg_catalog.pg_sequences s
         where s.schemaname = 'echovalue' and coalesce(s.last_value, 0) < v_start
    loop
        perform pg_catalog.setval(v_sequence::regclass, v_start);
        v_moved := v_moved + 1;
    end loop;
    return v_moved;
end;
$$;

-- The other nodes a LISTEN connection listens on as well (common/src/listen.rs): on Citus a
-- NOTIFY is sent on the node where its transaction runs, and an API call runs on the node of
-- its wallet (a webhook test, an alert, a changed schedule wake the mailhook from there).
-- Every active primary node but this one; none without Citus.
create function echovalue.listen_nodes() returns table (host text, port int)
language plpgsql stable security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
begin
    if not exists (select from pg_catalog.pg_extension e where e.extname = 'citus') then
        return;
    end if;
    return query
        select n.nodename::text, n.nodeport::int from pg_catalog.pg_dist_node n
         where n.isactive and n.noderole = 'primary'
           and n.groupid <> (select l.groupid from pg_catalog.pg_dist_local_group l)
         order by n.groupid;
end;
$$;

-- Whether the proxy may run several calls in one transaction (group commit, proxy/src/batch):
-- not once the install is distributed. Citus delegates a call to its wallet's node only outside
-- a transaction block; in one, every statement is planned on the node the proxy is connected
-- to and sent on, and a transaction over wallets on several nodes commits in two phases.
create function echovalue.group_commit() returns boolean
language plpgsql stable security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
begin
    return not exists (select from pg_catalog.pg_extension e where e.extname = 'citus')
        or not echovalue._distributed('wallets');
end;
$$;

-- The API functions routed by their wallet: every function of echovalue, but the internal ones
-- (`_…`), that takes the `wallet` hint. distribute() delegates them to their wallet's node and
-- sets their plan_cache_mode (_plan_cache_mode).
create function echovalue._routed_functions() returns setof regprocedure
language sql stable as $$
    select p.oid::regprocedure from pg_catalog.pg_proc p
     where p.pronamespace = 'echovalue'::regnamespace and p.proname !~ '^_'
       and 'wallet' = any (p.proargnames)
     order by p.proname
$$;

-- Sets plan_cache_mode p_mode (force_custom_plan, or auto: the setting removed) on every
-- routed API function of this node (_routed_functions; distribute() runs it on every node;
-- why: the comment at the top). Returns how many functions changed.
create function echovalue._plan_cache_mode(p_mode text) returns int
language plpgsql volatile as $$
declare
    v_function regprocedure;
    v_config text[];
    v_changed int := 0;
    v_propagate text := pg_catalog.current_setting('citus.enable_ddl_propagation');
begin
    -- (this node only: distribute() runs it on each)
    perform pg_catalog.set_config('citus.enable_ddl_propagation', 'off', true);
    for v_function, v_config in
        select f.f, p.proconfig from echovalue._routed_functions() f
          join pg_catalog.pg_proc p on p.oid = f.f
         order by p.proname
    loop
        if p_mode = 'auto'
           and exists (select from pg_catalog.unnest(v_config) c where c like 'plan\_cache\_mode=%') then
            execute pg_catalog.format('alter function %s reset plan_cache_mode', v_function);
            v_changed := v_changed + 1;
        elsif p_mode <> 'auto'
              and not ('plan_cache_mode=' || p_mode) = any (coalesce(v_config, '{}')) then
            execute pg_catalog.format('alter function %s set plan_cache_mode = %s', v_function, p_mode);
            v_changed := v_changed + 1;
        end if;
    end loop;
    perform pg_catalog.set_config('citus.enable_ddl_propagation', v_propagate, true);
    return v_changed;
end;
$$;

create function echovalue.distribute(plan_cache_mode text default 'force_custom_plan')
returns text
language plpgsql volatile as $$
declare
    v_table text;
    v_function regprocedure;
    v_done text[] := '{}';
    v_functions int := 0;
    v_planned int := 0;
    v_failed text;
begin
    if distribute.plan_cache_mode is null
       or distribute.plan_cache_mode not in ('force_custom_plan', 'auto') then
        raise exception 'echovalue: plan_cache_mode must be force_custom_plan or auto'
            using errcode = 'invalid_parameter_value';
    end if;
    if not exists (select from pg_catalog.pg_extension e where e.extname = 'citus') then
        raise exception 'echovalue: distribute() needs the citus extension in this database'
            using errcode = 'feature_not_supported',
                  hint = 'CREATE EXTENSION citus on the coordinator, add the workers, then run it again.';
    end if;
    if not (select r.rolsuper from pg_catalog.pg_roles r where r.rolname = current_user) then
        raise exception 'echovalue: only a superuser may distribute echovalue'
            using errcode = 'insufficient_privilege';
    end if;

    drop trigger if exists prices_restore on echovalue.prices;
    drop trigger if exists recharge_tiers_restore on echovalue.recharge_tiers;
    drop trigger if exists installation_keys_restore on echovalue.installation_keys;
    foreach v_table in array array['messages_id_idx', 'attachments_id_idx', 'deliveries_id_idx']
    loop
        if (select i.indisunique from pg_catalog.pg_index i
             where i.indexrelid = pg_catalog.to_regclass('echovalue.' || v_table)) then
            execute pg_catalog.format('drop index echovalue.%I', v_table);
            execute pg_catalog.format('create index %I on echovalue.%I (id)', v_table,
                                      pg_catalog.split_part(v_table, '_', 1));
        end if;
    end loop;
    foreach v_table in array array['mailboxes', 'webhooks'] loop
        if exists (select from pg_catalog.pg_constraint c
                    where c.conname = v_table || '_mailbox_key'
                      and c.conrelid = ('echovalue.' || v_table)::regclass) then
            execute pg_catalog.format('alter table echovalue.%I drop constraint %I', v_table,
                                      v_table || '_mailbox_key');
            execute pg_catalog.format('create index %I on echovalue.%I (mailbox)',
                                      v_table || '_mailbox_idx', v_table);
        end if;
    end loop;

    -- (one Citus call per statement: several in one statement deadlock on the metadata sync)
    foreach v_table in array array['prices', 'recharge_tiers', 'installation_keys', 'mail_relay',
                                   'token_legacy', 'mailbox_legacy', 'token_rate',
                                   'stripe_events'] loop
        if not echovalue._distributed(v_table) then
            perform create_reference_table(('echovalue.' || v_table)::regclass);
            v_done := v_done || v_table;
        end if;
    end loop;
    if not echovalue._distributed('wallets') then
        perform create_distributed_table('echovalue.wallets'::regclass, 'id');
        v_done := v_done || 'wallets'::text;
    end if;
    foreach v_table in array array['tokens', 'token_usage', 'kv', 'logs', 'refusal_log_rate',
                                   'wallet_settings', 'mailboxes', 'webhooks', 'messages',
                                   'attachments', 'deliveries'] loop
        if not echovalue._distributed(v_table) then
            perform create_distributed_table(('echovalue.' || v_table)::regclass, 'wallet_id',
                                             colocate_with => 'echovalue.wallets');
            v_done := v_done || v_table;
        end if;
    end loop;
    for v_function in select f.f from echovalue._routed_functions() f loop
        if not exists (select from pg_catalog.pg_dist_object o
                        where o.classid = 'pg_catalog.pg_proc'::regclass and o.objid = v_function
                          and o.distribution_argument_index is not null) then
            perform create_distributed_function(v_function, 'wallet',
                                                colocate_with => 'echovalue.wallets');
            v_functions := v_functions + 1;
        end if;
    end loop;
    -- (on every node, those added since included; "distribute() again" after adding one)
    select pg_catalog.string_agg(r.nodename || ':' || r.nodeport || ' ' || r.result, '; ')
      into v_failed
      from run_command_on_workers('select echovalue._node_sequences()') r where not r.success;
    if v_failed is not null then
        raise exception 'echovalue: could not give every worker its own range of ids: %', v_failed;
    end if;
    -- (each node sets its own functions: Citus would pass ALTER FUNCTION of a distributed
    -- function on to the workers, but refuses to after this transaction's parallel statements)
    select echovalue._plan_cache_mode(distribute.plan_cache_mode)
           + coalesce(pg_catalog.sum(r.result::int) filter (where r.success), 0),
           pg_catalog.string_agg(r.nodename || ':' || r.nodeport || ' ' || r.result, '; ')
               filter (where not r.success)
      into v_planned, v_failed
      from run_command_on_workers(pg_catalog.format('select echovalue._plan_cache_mode(%L)',
                                                    distribute.plan_cache_mode)) r;
    if v_failed is not null then
        raise exception 'echovalue: could not set plan_cache_mode on every worker: %', v_failed;
    end if;
    if v_functions > 0 then
        v_done := v_done || pg_catalog.format('%s API functions', v_functions);
    end if;
    if v_planned > 0 then
        v_done := v_done || pg_catalog.format('plan_cache_mode %s on %s API functions of the nodes',
                                              distribute.plan_cache_mode, v_planned);
    end if;
    return pg_catalog.format('distributed: %s', coalesce(nullif(pg_catalog.array_to_string(v_done, ', '), ''),
                                                          'nothing left to do'));
end;
$$;

