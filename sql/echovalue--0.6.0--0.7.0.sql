-- echovalue 0.6.0 -> 0.7.0: backup and restore (issue 15, item 11). The operator's tables
-- (prices, recharge tiers, the alert relay) are kept by pg_dump, and a restored row replaces the
-- shipped one of its key (prices, tiers, the installation key) instead of failing on it.
--
-- Layout: this head changes tables and data; sql/build/upgrade.py appends the functions that
-- are gone, new or changed, and the grants. tests/run.sh updates every earlier version and
-- compares the catalog with a fresh install.

select pg_catalog.pg_extension_config_dump('echovalue.prices', '');
select pg_catalog.pg_extension_config_dump('echovalue.recharge_tiers', '');
select pg_catalog.pg_extension_config_dump('echovalue.mail_relay', '');

create function echovalue._restore_price() returns trigger
language plpgsql as $$
begin
    update echovalue.prices p
       set credits = new.credits, endpoint = new.endpoint, scope = new.scope
     where p.operation = new.operation;
    if found then
        return null;
    end if;
    return new;
end $$;
create trigger prices_restore before insert on echovalue.prices
    for each row execute function echovalue._restore_price();

create function echovalue._restore_tier() returns trigger
language plpgsql as $$
begin
    update echovalue.recharge_tiers t
       set link = new.link, stripe_link_id = new.stripe_link_id, credits = new.credits
     where t.amount = new.amount;
    if found then
        return null;
    end if;
    return new;
end $$;
create trigger recharge_tiers_restore before insert on echovalue.recharge_tiers
    for each row execute function echovalue._restore_tier();

create function echovalue._restore_installation_key() returns trigger
language plpgsql as $$
begin
    update echovalue.installation_keys k
       set key = new.key, created = new.created
     where k.name = new.name;
    if found then
        return null;
    end if;
    return new;
end $$;
create trigger installation_keys_restore before insert on echovalue.installation_keys
    for each row execute function echovalue._restore_installation_key();

-- Functions new or changed in 0.7.0.

create or replace function echovalue._mail_quota_refusal(p_wallet bigint, p_bytes bigint) returns echovalue.smtp_reply
language sql stable as $$
    select row(452, '4.2.2 mailbox full; try again later')::echovalue.smtp_reply
     where echovalue._setting('mail_quota_mb') > 0
       and (select coalesce(sum(m.size_bytes), 0) from echovalue.messages m where m.wallet_id = p_wallet)
           + p_bytes > echovalue._setting('mail_quota_mb')::bigint * 1048576
$$;

create or replace function echovalue.mail_rcpt_check(recipient text) returns echovalue.smtp_reply
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_route record;
begin
    select * into v_route from echovalue._mail_route(mail_rcpt_check.recipient);
    if v_route.o_code is not null then
        return row(v_route.o_code, v_route.o_message)::echovalue.smtp_reply;
    end if;
    if not exists (select 1 from echovalue.wallets w
                    where w.id = (v_route.o_caller).wallet_id
                      and w.balance >= (echovalue._price('email')).credits) then
        return row(452, '4.2.2 mailbox owner is out of credits; try again later')::echovalue.smtp_reply;
    end if;
    -- at RCPT, one more byte must fit
    return coalesce(echovalue._mail_quota_refusal((v_route.o_caller).wallet_id, 1),
                    row(250, '2.1.5 recipient ok')::echovalue.smtp_reply);
end;
$$;

create or replace function echovalue.mail_receive(
    recipient text,
    message_id text,
    from_email text,
    from_name text,
    subject text,
    text_body text,
    html_body text,
    headers jsonb,
    size_bytes int,
    attachment_filenames text[] default '{}',
    attachment_content_types text[] default '{}',
    attachment_contents bytea[] default '{}'
) returns echovalue.smtp_reply
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_route record;
    v_caller echovalue.caller;
    v_paid echovalue.payment;
    v_message bigint;
    v_delivery bigint;
    v_full echovalue.smtp_reply;
    v_n int := coalesce(pg_catalog.cardinality(mail_receive.attachment_contents), 0);
begin
    if coalesce(pg_catalog.cardinality(mail_receive.attachment_filenames), 0) <> v_n
       or coalesce(pg_catalog.cardinality(mail_receive.attachment_content_types), 0) <> v_n
       or pg_catalog.array_position(mail_receive.attachment_contents, null) is not null then
        raise exception 'echovalue: mail_receive needs one filename, content type and content per attachment'
            using errcode = 'invalid_parameter_value';
    end if;
    select * into v_route from echovalue._mail_route(mail_receive.recipient);
    if v_route.o_code is not null then
        return row(v_route.o_code, v_route.o_message)::echovalue.smtp_reply;
    end if;
    v_caller := v_route.o_caller;
    v_full := echovalue._mail_quota_refusal(v_caller.wallet_id, greatest(mail_receive.size_bytes, 0));
    if v_full is not null then
        return v_full;
    end if;
    -- logged under the webhook's address, never the token
    v_caller.path := echovalue._webhook_email(v_route.o_webhook);
    v_paid := echovalue._pay(v_caller, 'email');
    if v_paid.balance is null then
        return row(452, '4.2.2 mailbox owner is out of credits; try again later')::echovalue.smtp_reply;
    end if;

    insert into echovalue.messages as m
        (wallet_id, external_id, from_email, from_name, subject, text_body, html_body, headers, size_bytes)
    values
        (v_caller.wallet_id, mail_receive.message_id, mail_receive.from_email, mail_receive.from_name,
         mail_receive.subject, mail_receive.text_body, mail_receive.html_body,
         coalesce(mail_receive.headers, '{}'::jsonb), mail_receive.size_bytes)
    returning m.id into v_message;
    insert into echovalue.attachments
        (wallet_id, message_id, position, filename, content_type, size, content)
    select v_caller.wallet_id, v_message, a.pos, a.filename,
           coalesce(a.content_type, 'application/octet-stream'), pg_catalog.octet_length(a.content), a.content
      from unnest(mail_receive.attachment_filenames, mail_receive.attachment_content_types,
                  mail_receive.attachment_contents) with ordinality as a(filename, content_type, content, pos)
     where (v_route.o_webhook).include_attachments;
    insert into echovalue.deliveries as d (wallet_id, message_id, webhook)
    values (v_caller.wallet_id, v_message, (v_route.o_webhook).name)
    returning d.id into v_delivery;
    perform echovalue._finish(v_caller, v_paid, 200, null);
    perform pg_catalog.pg_notify('echovalue_mail', v_delivery::text);
    return row(250, '2.0.0 queued as ' || v_message)::echovalue.smtp_reply;
end;
$$;

create or replace function echovalue._restore_price() returns trigger
language plpgsql as $$
begin
    update echovalue.prices p
       set credits = new.credits, endpoint = new.endpoint, scope = new.scope
     where p.operation = new.operation;
    if found then
        return null;
    end if;
    return new;
end $$;

create or replace function echovalue._restore_tier() returns trigger
language plpgsql as $$
begin
    update echovalue.recharge_tiers t
       set link = new.link, stripe_link_id = new.stripe_link_id, credits = new.credits
     where t.amount = new.amount;
    if found then
        return null;
    end if;
    return new;
end $$;

create or replace function echovalue._restore_installation_key() returns trigger
language plpgsql as $$
begin
    update echovalue.installation_keys k
       set key = new.key, created = new.created
     where k.name = new.name;
    if found then
        return null;
    end if;
    return new;
end $$;

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
    echovalue.token_new(inet, text, text),
    echovalue.wallet_get(text, text, text),
    echovalue.recharge_link(text, text, text, text),
    echovalue.logs_get(text, text, text, text, text),
    echovalue.kv_set(text, text, text, text, text, text, text),
    echovalue.kv_get(text, text, text, text, text),
    echovalue.kv_delete(text, text, text, text, text),
    echovalue.request_refuse(text, text, int, text, text, text),
    echovalue.token_key_create(text, text, text, text),
    echovalue.token_key_list(text, text, text),
    echovalue.token_key_revoke(text, text, text, text),
    echovalue.webhook_set(text, text, text, text),
    echovalue.webhook_get(text, text, text),
    echovalue.webhook_delete(text, text, text),
    echovalue.webhook_show(text, text, text, text),
    echovalue.webhook_put(text, text, text, text, text),
    echovalue.webhook_patch(text, text, text, text, text),
    echovalue.webhook_remove(text, text, text, text),
    echovalue.webhook_test(text, text, text, text),
    echovalue.webhook_test_result(text, boolean),
    echovalue.schedule_next(text, text, timestamptz),
    echovalue.schedule_latest(text, text, timestamptz),
    echovalue.attachment_get(text, text, text),
    echovalue.settings_get(text, text, text),
    echovalue.settings_put(text, text, text, text),
    echovalue.maintenance_run()
to echovalue_api;

-- stripe_event_record trusts its caller to have checked the Stripe signature (an application
-- with it could record a paid event and mint credits), and token_new lets only this role name
-- a client address other than its own connection's (or skip the creation rate limit).
revoke execute on function echovalue.stripe_event_record(text, text, text) from echovalue_api;
grant execute on function echovalue.stripe_event_record(text, text, text) to echovalue_gateway;

grant usage on schema echovalue to echovalue_worker;
grant execute on function
    echovalue.mail_rcpt_check(text),
    echovalue.mail_receive(text, text, text, text, text, text, text, jsonb, int, text[], text[], bytea[]),
    echovalue.address_classify(inet),
    echovalue.delivery_addresses_error(inet[]),
    echovalue.delivery_claim(int, int),
    echovalue.delivery_record(bigint, int, text, int, text, int),
    echovalue.schedule_claim(int),
    echovalue.schedule_next_due(),
    echovalue.stripe_event_apply(),
    echovalue.relay_register(text),
    echovalue.alert_email_claim(int, int)
to echovalue_worker;
