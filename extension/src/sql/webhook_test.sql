-- Testing a webhook (SPEC §12, POST /webhook/{webhookId}/test). The worker is the only part
-- that calls out, so the call queues one test delivery (kind `test`: one attempt, never
-- retried, logged as a webhook-delivery like any other) and names it in its outcome's
-- `x-echovalue-await` header. webhook_test_result answers once the worker is done: the proxy
-- asks, waits for the NOTIFY echovalue_webhook_test that delivery_record sends (holding no
-- database connection meanwhile), asks again, and at the deadline asks for the final answer.

-- A sample email as section 7 shapes it, for a test of webhook p_name.
create function echovalue._webhook_sample(p_wallet bigint, p_name text) returns text
language plpgsql volatile as $$
begin
    return (
    select echovalue._mail_payload(
               'test-' || pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', '') || '@' || d.domain,
               pg_catalog.now(), 'test@' || d.domain, 'echovalue', w.hash, 'Test webhook from echovalue',
               pg_catalog.format('This is a test delivery of your webhook %s.', p_name), null, '{}', '[]')
      from echovalue.wallets w,
           (select pg_catalog.lower(echovalue._setting_text('mail_domain')) as domain) d
     where w.id = p_wallet);
end;
$$;

-- A test's `x-echovalue-await` value: '<wallet id>:<delivery id>:<webhook-id>'. The wallet
-- names the shard of the test (test_wallet); the webhook-id, random, makes the value
-- unguessable.
create function echovalue._test_await(p_wallet bigint, p_id bigint, p_webhook_id text) returns text
language sql immutable as $$
    select p_wallet || ':' || p_id || ':' || p_webhook_id
$$;

-- The wallet an await value names, or NULL: the routing hint the proxy passes to
-- webhook_test_result (`wallet => echovalue.test_wallet($1)`). Immutable: see token_wallet.
create function echovalue.test_wallet(test text) returns bigint
language sql immutable strict as $$
    select (pg_catalog.regexp_match(test, '^([0-9]{1,18}):[0-9]{1,18}:msg_'))[1]::bigint
$$;

-- POST /webhook/{webhookId}/test: queues one delivery of a sample email in the webhook's
-- format (of a sample run for a scheduled webhook) and answers
-- `{"success":null,"message":"test webhook queued"}` with the header `x-echovalue-await`
-- (_test_await, for webhook_test_result); 404 `Webhook Not Found`. The URL is checked when the
-- worker claims it, as for every delivery.
create function echovalue.webhook_test(
    token text,
    webhook_id text,
    http_method text default 'POST',
    http_path text default null,
    wallet bigint default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(webhook_test.token, webhook_test.http_method,
        coalesce(webhook_test.http_path, '/webhook/' || webhook_test.webhook_id || '/test'));
    v_paid echovalue.payment;
    v_hook echovalue.webhooks;
    v_id bigint;
    v_webhook_id text;
    v_out echovalue.outcome;
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    v_paid := echovalue._pay(v_caller, 'webhook_test');
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    select * into v_hook from echovalue.webhooks h
     where h.wallet_id = v_caller.wallet_id and h.name = webhook_test.webhook_id;
    if not found then
        return echovalue._finish(v_caller, v_paid, 404, 'Webhook Not Found');
    end if;
    insert into echovalue.deliveries as d (wallet_id, webhook, kind, body)
    values (v_caller.wallet_id, v_hook.name, 'test',
            case when v_hook.cron is not null
                 then echovalue._schedule_run_body(v_hook, pg_catalog.now())
                 else echovalue._webhook_body(v_hook.format, v_hook.options, v_hook.template::text,
                          echovalue._webhook_sample(v_caller.wallet_id, v_hook.name)) end)
    returning d.id, d.webhook_id into v_id, v_webhook_id;
    perform pg_catalog.pg_notify('echovalue_mail', v_id::text);
    v_out := echovalue._finish(v_caller, v_paid, 200, '{"success":null,"message":"test webhook queued"}',
                               'application/json');
    v_out.headers := coalesce(v_out.headers, '{}'::jsonb) || pg_catalog.jsonb_build_object(
        'x-echovalue-await', echovalue._test_await(v_caller.wallet_id, v_id, v_webhook_id));
    return v_out;
end;
$$;

-- The answer to a test webhook_test queued, by its `x-echovalue-await` value: 200
-- `{"success":true,"message":"test webhook delivered"}` or `{"success":false,"message":
-- "webhook call failed: <reason>"}` (cost and balance NULL: the test call paid). While the
-- worker is not done: NULL, or with `final` the failure, and the test is ended (logged when no
-- worker had tried). No worker calls out after that: a test is only claimed within
-- _test_claim_window() of being queued, and the proxy asks for the final answer after that
-- window and the worker's delivery timeout; still pending then means its worker died.
-- `wallet` is a routing hint only (the proxy passes echovalue.test_wallet(test)); the value's
-- own wallet decides. A value of the form before 0.11.0, '<delivery id>:<webhook-id>', is
-- still answered (a test queued while the extension was updated): its wallet is read first.
create function echovalue.webhook_test_result(
    test text, final boolean default false, wallet bigint default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_m text[] := pg_catalog.regexp_match(webhook_test_result.test,
                                          '^(?:([0-9]{1,18}):)?([1-9][0-9]{0,17}):(msg_[0-9a-f]{32})$');
    v_row echovalue.deliveries;
    v_why text;
    v_wallet bigint := v_m[1]::bigint;
begin
    if v_m is null then
        raise exception 'echovalue: webhook_test_result needs the x-echovalue-await value of a test'
            using errcode = 'invalid_parameter_value';
    end if;
    v_m := v_m[2:3];
    if v_wallet is null then
        -- (on Citus a read of every shard's id index; a FOR UPDATE must name the shard)
        select d.wallet_id into v_wallet from echovalue.deliveries d
         where d.id = v_m[1]::bigint and d.webhook_id = v_m[2] and d.kind = 'test';
    end if;
    if webhook_test_result.final then
        -- locked: no record changes it while this ends it (its claim window is over)
        select * into v_row from echovalue.deliveries d
         where d.wallet_id = v_wallet and d.id = v_m[1]::bigint and d.webhook_id = v_m[2]
           and d.kind = 'test'
           for update;
    else
        -- not locked: a claim (SKIP LOCKED) that came now would pass the test by, and the
        -- NOTIFY that woke its worker is spent
        select * into v_row from echovalue.deliveries d
         where d.wallet_id = v_wallet and d.id = v_m[1]::bigint and d.webhook_id = v_m[2]
           and d.kind = 'test';
    end if;
    if not found then
        v_why := 'the test is gone';
    elsif v_row.state = 'pending' and not webhook_test_result.final then
        return null;
    elsif v_row.state = 'pending' then
        v_why := case when v_row.attempts = 0 then 'no worker took the test in time'
                      else 'the call did not finish in time' end;
        update echovalue.deliveries d set state = 'failed', last_error = v_why
         where d.wallet_id = v_row.wallet_id and d.id = v_row.id and d.state = 'pending';
        if v_row.attempts = 0 then
            perform echovalue._delivery_log(v_row.wallet_id, v_row.webhook_id, 0, v_why);
        end if;
    elsif v_row.state = 'delivered' then
        return echovalue._outcome(200, '{"success":true,"message":"test webhook delivered"}', null, null,
                                  'application/json');
    else
        v_why := coalesce(v_row.last_error, 'HTTP ' || v_row.last_status, 'delivery failed');
    end if;
    return echovalue._outcome(200,
        pg_catalog.format('{"success":false,"message":%s}', echovalue._json_str('webhook call failed: ' || v_why)),
        null, null, 'application/json');
end;
$$;
