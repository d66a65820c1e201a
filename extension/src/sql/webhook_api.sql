-- Webhook configuration API (SPEC §2, §7 and §12): the seeds' POST/GET/DELETE /webhook on the
-- webhook named `default`, and /webhook/{webhookId} for every named webhook. Each call costs
-- its operation's price and is logged with endpoint `webhook`.

-- The answer to a paid call that names webhook p_name of the caller's wallet: its
-- WebhookResponse, or 404 `Webhook Not Found`.
create function echovalue._webhook_answer(
    p_caller echovalue.caller, p_paid echovalue.payment, p_name text
) returns echovalue.outcome
language plpgsql volatile as $$
declare
    v_hook echovalue.webhooks;
    v_hash text;
begin
    select * into v_hook from echovalue.webhooks h
     where h.wallet_id = p_caller.wallet_id and h.name = p_name;
    if not found then
        return echovalue._finish(p_caller, p_paid, 404, 'Webhook Not Found');
    end if;
    -- (the hash read by a statement of its own: on Citus an expression holding a query of
    -- the wallet's rows runs whole on its shard, where _finish could not write the log)
    select w.hash into v_hash from echovalue.wallets w where w.id = p_caller.wallet_id;
    return echovalue._finish(p_caller, p_paid, 200, echovalue._webhook_response(v_hook, v_hash),
                             'application/json');
end;
$$;

-- POST /webhook, PUT and PATCH /webhook/{webhookId}: writes one webhook from a body.
-- webhook_set (POST) takes the name from the body's webhookId (`default` without one) and
-- answers `OK`; webhook_put and webhook_patch take it from the path (a different webhookId
-- in the body is refused) and answer the WebhookResponse; webhook_patch changes only the
-- fields given (404 when there is no such webhook; a format other than custom drops the
-- template; a schedule's fields merge into the stored schedule, `"schedule": null` makes it a
-- mailbox webhook again). The configuration is checked as a whole after paying, under the wallet's lock.
create function echovalue._webhook_write(
    p_caller echovalue.caller, p_operation text, p_name text, p_body text
) returns echovalue.outcome
language plpgsql volatile as $$
declare
    v_error text;
    v_config jsonb;
    v_template text;
    v_name text := p_name;
    v_hook echovalue.webhooks;
    v_paid echovalue.payment;
begin
    select b.p_error, b.p_config, b.p_template into v_error, v_config, v_template
      from echovalue._webhook_body_parse(p_body) b;
    if v_error is null and pg_catalog.jsonb_typeof(v_config -> 'webhookId') <> 'null' then
        if pg_catalog.jsonb_typeof(v_config -> 'webhookId') <> 'string' then
            v_error := 'Bad Request: webhookId must be a string';
        elsif p_operation = 'webhook_set' then
            v_name := v_config ->> 'webhookId';
        elsif v_config ->> 'webhookId' <> p_name then
            v_error := 'Bad Request: webhookId in the body differs from the one in the path';
        end if;
    end if;
    v_error := coalesce(v_error, echovalue._webhook_id_error(v_name));
    if v_error is not null then
        return echovalue._fail(p_caller, p_operation, 400, v_error);
    end if;
    v_paid := echovalue._pay(p_caller, p_operation);
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    if p_operation = 'webhook_patch' then
        select * into v_hook from echovalue.webhooks h
         where h.wallet_id = p_caller.wallet_id and h.name = v_name;
        if not found then
            return echovalue._finish(p_caller, v_paid, 404, 'Webhook Not Found');
        end if;
        if pg_catalog.jsonb_typeof(v_config -> 'schedule') = 'object' then
            -- a schedule given: scheduled mode; its fields merge into the stored schedule
            v_config := v_config || pg_catalog.jsonb_build_object('schedule',
                coalesce(echovalue._webhook_config(v_hook) -> 'schedule', '{}'::jsonb) || (v_config -> 'schedule'));
            v_config := (echovalue._webhook_config(v_hook) - 'format' - 'options' - 'includeAttachments')
                        || v_config;
        else
            v_config := echovalue._webhook_config(v_hook) || v_config;
            if not v_config ? 'template' and v_config ->> 'format' = 'custom' then
                v_template := v_hook.template::text;
            end if;
        end if;
    end if;
    v_error := echovalue._webhook_config_error(v_config, v_template);
    if v_error is not null then
        return echovalue._finish(p_caller, v_paid, 400, v_error);
    end if;
    if not echovalue._webhook_store(p_caller.wallet_id, v_name, v_config, v_template) then
        return echovalue._finish(p_caller, v_paid, 400,
            pg_catalog.format('Bad Request: a wallet has at most %s webhooks', echovalue._setting('max_webhooks')));
    end if;
    if p_operation = 'webhook_set' then
        return echovalue._finish(p_caller, v_paid, 200, 'OK');
    end if;
    return echovalue._webhook_answer(p_caller, v_paid, v_name);
end;
$$;

-- POST /webhook {"url":…,"headers":{…}} (seed 002), and every other field of a webhook with
-- `webhookId` to name one (`default` without): creates or replaces it; `OK`.
create function echovalue.webhook_set(
    token text,
    body text,
    http_method text default 'POST',
    http_path text default '/webhook',
    wallet bigint default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(webhook_set.token, webhook_set.http_method,
                                                            webhook_set.http_path);
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    return echovalue._webhook_write(v_caller, 'webhook_set', 'default', webhook_set.body);
end;
$$;

-- GET /webhook: the seed object of `default` ({"webhook":url,"headers":{name:"<redacted>"},
-- "email":…,"hash":…,"secret":…}; only email and hash without it), then "webhooks": every
-- webhook of the wallet as a WebhookResponse, by webhookId.
create function echovalue.webhook_get(
    token text,
    http_method text default 'GET',
    http_path text default '/webhook',
    wallet bigint default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(webhook_get.token, webhook_get.http_method,
                                                            webhook_get.http_path);
    v_paid echovalue.payment;
    v_mailbox echovalue.mailboxes;
    v_hash text;
    v_hook echovalue.webhooks;
    v_email text;
    v_body text;
    v_hooks echovalue.webhooks[];
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    v_paid := echovalue._pay(v_caller, 'webhook_get');
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    v_mailbox := echovalue._mailbox_ensure(v_caller.wallet_id);
    v_email := echovalue._json_str(echovalue._mailbox_address(v_mailbox.mailbox));
    select w.hash into v_hash from echovalue.wallets w where w.id = v_caller.wallet_id;
    select * into v_hook from echovalue.webhooks h
     where h.wallet_id = v_caller.wallet_id and h.name = 'default';
    if found then
        v_body := pg_catalog.format('{"webhook":%s,"headers":%s,"email":%s,"hash":%s,"secret":%s',
            echovalue._json_str(v_hook.url), echovalue._webhook_headers_json(v_hook.headers),
            v_email, echovalue._json_str(v_hash), echovalue._json_str(v_mailbox.secret));
    else
        v_body := pg_catalog.format('{"email":%s,"hash":%s', v_email, echovalue._json_str(v_hash));
    end if;
    -- The rows are read first, then formatted by a statement of their own: on Citus a query
    -- on one wallet's rows runs whole on its shard, where _webhook_response could not read
    -- mailboxes (a query from a shard may not be distributed again), and where a row is of
    -- the shard's own type.
    select pg_catalog.array_agg(row(x.*)::echovalue.webhooks) into v_hooks
      from echovalue.webhooks x where x.wallet_id = v_caller.wallet_id;
    v_body := v_body || ',"webhooks":[' || coalesce((
        select pg_catalog.string_agg(echovalue._webhook_response(h, v_hash), ',' order by h.name)
          from pg_catalog.unnest(v_hooks) h), '') || ']}';
    return echovalue._finish(v_caller, v_paid, 200, v_body, 'application/json');
end;
$$;

-- DELETE /webhook: deletes `default`; `OK`, or 404 `Webhook Not Found` when there is none.
create function echovalue.webhook_delete(
    token text,
    http_method text default 'DELETE',
    http_path text default '/webhook',
    wallet bigint default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(webhook_delete.token, webhook_delete.http_method,
                                                            webhook_delete.http_path);
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    return echovalue._webhook_remove(v_caller, 'webhook_delete', 'default');
end;
$$;

-- Deletes webhook p_name of the caller's wallet (its address stops taking mail; deliveries
-- still queued for it fail): `OK`, or 404 `Webhook Not Found`.
create function echovalue._webhook_remove(
    p_caller echovalue.caller, p_operation text, p_name text
) returns echovalue.outcome
language plpgsql volatile as $$
declare
    v_paid echovalue.payment;
begin
    v_paid := echovalue._pay(p_caller, p_operation);
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    delete from echovalue.webhooks h where h.wallet_id = p_caller.wallet_id and h.name = p_name;
    if not found then
        return echovalue._finish(p_caller, v_paid, 404, 'Webhook Not Found');
    end if;
    return echovalue._finish(p_caller, v_paid, 200, 'OK');
end;
$$;

-- GET /webhook/{webhookId}: its WebhookResponse; 404 `Webhook Not Found`.
create function echovalue.webhook_show(
    token text,
    webhook_id text,
    http_method text default 'GET',
    http_path text default null,
    wallet bigint default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(webhook_show.token, webhook_show.http_method,
        coalesce(webhook_show.http_path, '/webhook/' || webhook_show.webhook_id));
    v_paid echovalue.payment;
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    v_paid := echovalue._pay(v_caller, 'webhook_show');
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    return echovalue._webhook_answer(v_caller, v_paid, webhook_show.webhook_id);
end;
$$;

-- PUT /webhook/{webhookId}: creates or replaces it (every field as POST /webhook takes
-- them); its WebhookResponse.
create function echovalue.webhook_put(
    token text,
    webhook_id text,
    body text,
    http_method text default 'PUT',
    http_path text default null,
    wallet bigint default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(webhook_put.token, webhook_put.http_method,
        coalesce(webhook_put.http_path, '/webhook/' || webhook_put.webhook_id));
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    return echovalue._webhook_write(v_caller, 'webhook_put', webhook_put.webhook_id, webhook_put.body);
end;
$$;

-- PATCH /webhook/{webhookId}: changes only the fields given (headers, options and template
-- are replaced whole); its WebhookResponse, or 404 `Webhook Not Found`.
create function echovalue.webhook_patch(
    token text,
    webhook_id text,
    body text,
    http_method text default 'PATCH',
    http_path text default null,
    wallet bigint default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(webhook_patch.token, webhook_patch.http_method,
        coalesce(webhook_patch.http_path, '/webhook/' || webhook_patch.webhook_id));
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    return echovalue._webhook_write(v_caller, 'webhook_patch', webhook_patch.webhook_id, webhook_patch.body);
end;
$$;

-- DELETE /webhook/{webhookId}: `OK`, or 404 `Webhook Not Found`.
create function echovalue.webhook_remove(
    token text,
    webhook_id text,
    http_method text default 'DELETE',
    http_path text default null,
    wallet bigint default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(webhook_remove.token, webhook_remove.http_method,
        coalesce(webhook_remove.http_path, '/webhook/' || webhook_remove.webhook_id));
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    return echovalue._webhook_remove(v_caller, 'webhook_remove', webhook_remove.webhook_id);
end;
$$;
