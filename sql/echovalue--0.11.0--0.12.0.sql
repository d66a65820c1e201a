-- echovalue 0.11.0 -> 0.12.0: scale-out on Citus, fourth part (issue 14, SPEC section 18).
-- echovalue.distribute() takes plan_cache_mode (default force_custom_plan) and sets it on every
-- delegated API function: with generic plans, Citus 13.2.2's local execution plans each shard
-- statement anew and keeps every such plan until the connection ends (distribute.sql says
-- why). On a distributed install, run echovalue.distribute() again after this update.
--
-- Layout: this head changes tables and data; sql/build/upgrade.py appends the functions that
-- are gone, new or changed, and the grants. tests/run.sh updates every earlier version and
-- compares the catalog with a fresh install.

-- Functions gone, or whose arguments or result changed.

drop function if exists echovalue.distribute();

-- Functions new or changed in 0.12.0.

create or replace function echovalue._plan_cache_mode(p_mode text) returns int
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
        select p.oid::regprocedure, p.proconfig from pg_catalog.pg_proc p
         where p.pronamespace = 'echovalue'::regnamespace and p.proname !~ '^_'
           and 'wallet' = any (p.proargnames)
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

create or replace function echovalue.distribute(plan_cache_mode text default 'force_custom_plan')
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
    for v_function in
        select p.oid::regprocedure from pg_catalog.pg_proc p
         where p.pronamespace = 'echovalue'::regnamespace and p.proname !~ '^_'
           and 'wallet' = any (p.proargnames)
         order by p.proname
    loop
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

-- Privileges, as in a fresh install (extension/src/sql/grants.sql).

-- Privileges, last: PUBLIC gets nothing; echovalue_api (a SQL application, and through
-- echovalue_gateway the proxy) may use the schema and execute the API functions only;
-- echovalue_gateway (the proxy) besides records Stripe events it verified and names the
-- client address of a new wallet; echovalue_worker (the mailhook) only the worker functions.
-- None can read or write any table or call an internal `_` helper.

do $$
begin
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'echovalue_api') then
        create role echovalue_api nologin;
    end if;
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'echovalue_worker') then
        create role echovalue_worker nologin;
    end if;
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'echovalue_gateway') then
        create role echovalue_gateway nologin;
    end if;
end;
$$;
grant echovalue_api to echovalue_gateway;

revoke all on all tables in schema echovalue from public;
revoke all on all sequences in schema echovalue from public;
revoke all on all functions in schema echovalue from public;
revoke all on schema echovalue from public;

grant usage on schema echovalue to echovalue_api;
grant execute on function
    echovalue.token_format_ok(text),
    echovalue.token_wallet(text),
    echovalue.group_commit(),
    echovalue.token_new(inet, text, text),
    echovalue.wallet_get(text, text, text, bigint),
    echovalue.recharge_link(text, text, text, text, bigint),
    echovalue.logs_get(text, text, text, text, text, bigint),
    echovalue.kv_set(text, text, text, text, text, text, text, bigint),
    echovalue.kv_get(text, text, text, text, text, bigint),
    echovalue.kv_delete(text, text, text, text, text, bigint),
    echovalue.kv_list(text, text, text, text, text, text, text, bigint),
    echovalue.kv_groups(text, text, text, text, text, text, bigint),
    echovalue.request_refuse(text, text, int, text, text, text, bigint),
    echovalue.token_key_create(text, text, text, text, bigint),
    echovalue.token_key_list(text, text, text, bigint),
    echovalue.token_key_revoke(text, text, text, text, bigint),
    echovalue.webhook_set(text, text, text, text, bigint),
    echovalue.webhook_get(text, text, text, bigint),
    echovalue.webhook_delete(text, text, text, bigint),
    echovalue.webhook_show(text, text, text, text, bigint),
    echovalue.webhook_put(text, text, text, text, text, bigint),
    echovalue.webhook_patch(text, text, text, text, text, bigint),
    echovalue.webhook_remove(text, text, text, text, bigint),
    echovalue.webhook_test(text, text, text, text, bigint),
    echovalue.webhook_test_result(text, boolean, bigint),
    echovalue.test_wallet(text),
    echovalue.schedule_next(text, text, timestamptz),
    echovalue.schedule_latest(text, text, timestamptz),
    echovalue.attachment_get(text, text, text),
    echovalue.settings_get(text, text, text, bigint),
    echovalue.settings_put(text, text, text, text, bigint),
    echovalue.maintenance_run()
to echovalue_api;

-- stripe_event_record trusts its caller to have checked the Stripe signature (an application
-- with it could record a paid event and mint credits), and token_new lets only this role name
-- a client address other than its own connection's (or skip the creation rate limit).
revoke execute on function echovalue.stripe_event_record(text, text, text) from echovalue_api;
grant execute on function echovalue.stripe_event_record(text, text, text) to echovalue_gateway;
-- the nodes whose NOTIFYs the proxy listens for too (distribute.sql; the mailhook's below)
grant execute on function echovalue.listen_nodes() to echovalue_gateway;

grant usage on schema echovalue to echovalue_worker;
grant execute on function
    echovalue.recipient_wallet(text),
    echovalue.mail_rcpt_check(text, bigint),
    echovalue.mail_receive(text, text, text, text, text, text, text, jsonb, int, text[], text[], bytea[],
                           bigint),
    echovalue.address_classify(inet),
    echovalue.delivery_addresses_error(inet[]),
    echovalue.delivery_claim(int, int),
    echovalue.delivery_record(bigint, int, text, int, text, int),
    echovalue.schedule_claim(int),
    echovalue.schedule_next_due(),
    echovalue.stripe_event_apply(),
    echovalue.relay_register(text),
    echovalue.alert_email_claim(int, int),
    echovalue.listen_nodes()
to echovalue_worker;
