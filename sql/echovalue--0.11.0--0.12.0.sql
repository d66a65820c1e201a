-- echovalue 0.11.0 -> 0.12.0: scale-out on Citus, fourth part (issue 14, SPEC section 18).
-- echovalue.distribute() takes plan_cache_mode (default force_custom_plan) and sets it on every
-- delegated API function: with generic plans, Citus 13.2.2's local execution plans each shard
-- statement anew and keeps every such plan until the connection ends (distribute.sql says
-- why). delivery_claim and alert_email_claim return the delivery's wallet_id, and
-- delivery_record takes it as the routing hint `wallet`, so on Citus it is delegated to the
-- delivery's node instead of looking for the id on every shard. On a distributed install, run
-- echovalue.distribute() again after this update.
--
-- Layout: this head changes tables and data; sql/build/upgrade.py appends the functions that
-- are gone, new or changed, and the grants. tests/run.sh updates every earlier version and
-- compares the catalog with a fresh install.

-- Functions gone, or whose arguments or result changed.

drop function if exists echovalue.delivery_record(bigint, int, text, int, text, int);
drop function if exists echovalue.delivery_claim(int, int);
drop function if exists echovalue.alert_email_claim(int, int);
drop function if exists echovalue.distribute();

-- Functions new or changed in 0.12.0.

create or replace function echovalue._refusal_log_allowed(p_wallet bigint) returns boolean
language plpgsql volatile as $$
declare
    v_entries int;
begin
    insert into echovalue.refusal_log_rate as r (wallet_id, minute, entries)
    values (p_wallet, pg_catalog.date_trunc('minute', pg_catalog.now()), 1)
    on conflict (wallet_id) do update
       set minute = greatest(r.minute, excluded.minute),
           entries = case when r.minute >= excluded.minute then r.entries + 1 else 1 end
    returning r.entries into v_entries;
    return v_entries <= echovalue._setting('refusal_logs_per_minute');
end;
$$;

create or replace function echovalue._routed_functions() returns setof regprocedure
language sql stable as $$
    select p.oid::regprocedure from pg_catalog.pg_proc p
     where p.pronamespace = 'echovalue'::regnamespace and p.proname !~ '^_'
       and 'wallet' = any (p.proargnames)
     order by p.proname
$$;

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

create or replace function echovalue.delivery_record(
    delivery_id bigint,
    attempt int,
    outcome text,
    status_code int default null,
    error text default null,
    retry_seconds int default null,
    wallet bigint default null
) returns boolean
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_wallet bigint;
    v_webhook_id text;
    v_kind text;
    v_error text := pg_catalog.left(delivery_record.error, 500);
    v_changed boolean := false;
    -- (a variable, not now() in the CASE: Citus refuses a non-immutable function there)
    v_retry_at timestamptz := pg_catalog.now()
        + pg_catalog.make_interval(secs => coalesce(delivery_record.retry_seconds, 0));
begin
    if delivery_record.outcome is null or delivery_record.outcome not in ('delivered', 'retry', 'failed')
       or (delivery_record.outcome = 'retry' and coalesce(delivery_record.retry_seconds, -1) < 0) then
        raise exception 'echovalue: delivery_record needs outcome delivered, failed, or retry with retry_seconds >= 0'
            using errcode = 'invalid_parameter_value';
    end if;
    -- The delivery's wallet first (with the hint, one shard's; else, on Citus, a read of every
    -- shard's id index), then every statement names it, so it runs on that wallet's shard.
    select d.wallet_id, d.webhook_id, d.kind into v_wallet, v_webhook_id, v_kind
      from echovalue.deliveries d
     where d.wallet_id = delivery_record.wallet and d.id = delivery_record.delivery_id;
    if not found then
        select d.wallet_id, d.webhook_id, d.kind into v_wallet, v_webhook_id, v_kind
          from echovalue.deliveries d where d.id = delivery_record.delivery_id;
    end if;
    if not found then
        return false;   -- purged with its wallet or message
    end if;
    -- a test is never retried: its one attempt's retry is its failure
    update echovalue.deliveries d
       set state = case when delivery_record.outcome <> 'retry' then delivery_record.outcome
                        when d.kind = 'test' then 'failed' else 'pending' end,
           next_attempt_at = case when delivery_record.outcome = 'retry' and d.kind <> 'test'
               then v_retry_at else d.next_attempt_at end,
           last_status = delivery_record.status_code,
           last_error = v_error
     where d.wallet_id = v_wallet and d.id = delivery_record.delivery_id
       and d.state = 'pending'
       and (delivery_record.outcome = 'delivered' or d.attempts = delivery_record.attempt);
    v_changed := found;
    if not v_changed then
        null;   -- recorded already (or the lease ran out and another attempt took it)
    elsif v_kind = 'test' then
        perform pg_catalog.pg_notify('echovalue_webhook_test',
            echovalue._test_await(v_wallet, delivery_record.delivery_id, v_webhook_id));
    elsif v_kind = 'scheduled' then
        -- the webhook shows how its latest run went
        update echovalue.webhooks h
           set last_status = case when delivery_record.outcome = 'delivered' then 'success' else 'failure' end,
               last_error = case when delivery_record.outcome = 'delivered' then null
                                 else coalesce(v_error, 'delivery failed') end
          from echovalue.deliveries d
         where d.wallet_id = v_wallet and d.id = delivery_record.delivery_id
           and h.wallet_id = v_wallet and h.name = d.webhook
           and h.last_run_at <= d.created;
    end if;
    perform echovalue._delivery_log(v_wallet, v_webhook_id, coalesce(delivery_record.status_code, 0),
                                    case when delivery_record.outcome = 'delivered' then null
                                         else coalesce(v_error, 'delivery failed') end, v_kind);
    return v_changed;
end;
$$;

create or replace function echovalue.delivery_claim(batch int default 50, lease_seconds int default 60)
returns table (delivery_id bigint, attempt int, webhook_id text, url text, url_error text,
               headers jsonb, secret text, payload text, wallet_id bigint)
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_row record;
    v_claimed int;
    v_returned int;
    v_format text;
    v_options jsonb;
    v_template text;
    v_gone text;
begin
    if delivery_claim.batch is null or delivery_claim.batch not between 1 and 10000
       or delivery_claim.lease_seconds is null or delivery_claim.lease_seconds not between 1 and 86400 then
        raise exception 'echovalue: delivery_claim needs batch 1..10000 and lease_seconds 1..86400'
            using errcode = 'invalid_parameter_value';
    end if;
    loop
        v_claimed := 0;
        v_returned := 0;
        for v_row in select * from echovalue._delivery_lease(delivery_claim.batch, delivery_claim.lease_seconds)
        loop
            v_claimed := v_claimed + 1;
            if v_row.kind = 'alert' then
                -- an alert's body is made when it is queued; it goes to the alert webhook
                select s.url, s.headers, mb.secret into url, headers, secret
                  from echovalue.wallet_settings s
                  join echovalue.mailboxes mb on mb.wallet_id = s.wallet_id
                 where s.wallet_id = v_row.wallet_id and s.url is not null;
            else
                select h.url, h.headers, mb.secret, h.format, h.options, h.template::text
                  into url, headers, secret, v_format, v_options, v_template
                  from echovalue.webhooks h
                  join echovalue.mailboxes mb on mb.wallet_id = h.wallet_id
                 where h.wallet_id = v_row.wallet_id and h.name = v_row.webhook;
            end if;
            if not found then
                v_gone := case when v_row.kind = 'alert' then 'no alert webhook configured'
                               else 'no webhook configured' end;
                update echovalue.deliveries d
                   set state = 'failed', last_status = null, last_error = v_gone
                 where d.wallet_id = v_row.wallet_id and d.id = v_row.id;
                perform echovalue._delivery_log(v_row.wallet_id, v_row.webhook_id, 0, v_gone);
                if v_row.kind = 'test' then
                    perform pg_catalog.pg_notify('echovalue_webhook_test',
                        echovalue._test_await(v_row.wallet_id, v_row.id, v_row.webhook_id));
                end if;
                continue;
            end if;
            delivery_id := v_row.id;
            attempt := v_row.attempts;
            wallet_id := v_row.wallet_id;
            url_error := pg_catalog.regexp_replace(echovalue._webhook_url_error(url),
                                                   '^Bad Request: ', '');
            webhook_id := v_row.webhook_id;
            payload := case when v_row.kind = 'mail'
                then echovalue._webhook_body(v_format, v_options, v_template,
                                             echovalue._delivery_payload(v_row.wallet_id, v_row.message_id))
                else v_row.body end;
            v_returned := v_returned + 1;
            return next;
        end loop;
        exit when v_claimed = 0 or v_returned > 0;
    end loop;
end;
$$;

create or replace function echovalue.alert_email_claim(batch int default 10, lease_seconds int default 60)
returns table (delivery_id bigint, attempt int, message_id text, recipient text, subject text,
               body text, wallet_id bigint)
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
begin
    if alert_email_claim.batch is null or alert_email_claim.batch not between 1 and 10000
       or alert_email_claim.lease_seconds is null
       or alert_email_claim.lease_seconds not between 1 and 86400 then
        raise exception 'echovalue: alert_email_claim needs batch 1..10000 and lease_seconds 1..86400'
            using errcode = 'invalid_parameter_value';
    end if;
    return query
        select l.id, l.attempts, l.webhook_id, (l.body::jsonb) ->> 'to', (l.body::jsonb) ->> 'subject',
               (l.body::jsonb) ->> 'text', l.wallet_id
          from echovalue._delivery_lease(alert_email_claim.batch, alert_email_claim.lease_seconds,
                                         p_email => true) l;
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
    echovalue.delivery_record(bigint, int, text, int, text, int, bigint),
    echovalue.schedule_claim(int),
    echovalue.schedule_next_due(),
    echovalue.stripe_event_apply(),
    echovalue.relay_register(text),
    echovalue.alert_email_claim(int, int),
    echovalue.listen_nodes()
to echovalue_worker;
