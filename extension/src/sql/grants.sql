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
