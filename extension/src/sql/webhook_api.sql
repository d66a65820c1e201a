-- Webhook configuration API (SPEC §2, §7 and §12): the seeds' POST/GET/DELETE /webhook on the
-- webhook named `default`, and /webhook/{webhookId} for every named webhook. Each call costs
-- its operation's price and is logged with endpoint `webhook`.

-- Why a POST, PUT or PATCH body is refused before anything is read, or NULL: it must be a JSON
-- object. p_config gets it, p_template the JSON text of its `template` as written (NULL when
-- absent or null), so a template keeps its keys in the user's order.
create function echovalue._webhook_body_parse(
    p_body text, out p_error text, out p_config jsonb, out p_template text
)
language plpgsql stable as $$
begin
    begin
        p_config := p_body::jsonb;
    exception when data_exception or statement_too_complex then
        p_error := 'Bad Request: body must be a JSON object';
        return;
    end;
    if p_config is null or pg_catalog.jsonb_typeof(p_config) <> 'object' then
        p_error := 'Bad Request: body must be a JSON object';
        return;
    end if;
    if pg_catalog.jsonb_typeof(p_config -> 'template') <> 'null' then
        p_template := (p_body::json -> 'template')::text;
    end if;
end;
$$;

-- A stored webhook as the API's fields of its mode, for PATCH to merge a body into (the
-- template is kept apart, as text).
create function echovalue._webhook_config(p_hook echovalue.webhooks) returns jsonb
language sql immutable as $$
    select case when p_hook.cron is null
        then pg_catalog.jsonb_build_object('url', p_hook.url, 'headers', p_hook.headers,
                 'format', p_hook.format, 'options', p_hook.options,
                 'includeAttachments', p_hook.include_attachments)
        else pg_catalog.jsonb_build_object('url', p_hook.url, 'headers', p_hook.headers,
                 'schedule', pg_catalog.jsonb_build_object('cron', p_hook.cron,
                     'timezone', p_hook.timezone, 'active', p_hook.active))
    end
$$;

-- Creates or replaces webhook p_name of a wallet from a checked configuration (a webhook
-- keeps its address when replaced, and its planned run while its schedule stays the same).
-- False, with nothing written, when it would be one more
-- than echovalue.max_webhooks; the caller has paid, so it holds the wallet's row lock and
-- parallel creations are counted one after the other.
create function echovalue._webhook_store(
    p_wallet bigint, p_name text, p_config jsonb, p_template text
) returns boolean
language plpgsql volatile as $$
declare
    v_old echovalue.webhooks;
    v_cron text := p_config -> 'schedule' ->> 'cron';
    v_zone text := p_config -> 'schedule' ->> 'timezone';
    v_active boolean := coalesce((p_config -> 'schedule' ->> 'active')::boolean, true);
    v_next timestamptz;
begin
    select * into v_old from echovalue.webhooks h where h.wallet_id = p_wallet and h.name = p_name;
    if not found and (select pg_catalog.count(*) from echovalue.webhooks h where h.wallet_id = p_wallet)
                     >= echovalue._setting('max_webhooks') then
        return false;
    end if;
    -- the next run: none while paused; kept while the schedule stays the same (a due run is
    -- not skipped by a rewrite); else computed from now
    v_next := case
        when v_cron is null or not v_active then null
        when v_old.cron = v_cron and v_old.timezone = v_zone and v_old.next_run_at is not null
            then v_old.next_run_at
        else echovalue.schedule_next(v_cron, v_zone, pg_catalog.now()) end;
    perform echovalue._mailbox_ensure(p_wallet);
    insert into echovalue.webhooks as h
        (wallet_id, name, url, headers, format, template, options, include_attachments, mailbox,
         cron, timezone, active, next_run_at)
    values (p_wallet, p_name, p_config ->> 'url',
            case when pg_catalog.jsonb_typeof(p_config -> 'headers') = 'object'
                 then p_config -> 'headers' else '{}'::jsonb end,
            coalesce(p_config ->> 'format', ''),
            case when p_config ->> 'format' = 'custom' then p_template::json end,
            case when pg_catalog.jsonb_typeof(p_config -> 'options') = 'object'
                 then p_config -> 'options' else '{}'::jsonb end,
            coalesce((p_config ->> 'includeAttachments')::boolean, true),
            case when p_name <> 'default' then pg_catalog.encode(echovalue._random_bytes(12), 'hex') end,
            v_cron, v_zone, v_active, v_next)
    on conflict (wallet_id, name) do update
        set url = excluded.url, headers = excluded.headers, format = excluded.format,
            template = excluded.template, options = excluded.options,
            include_attachments = excluded.include_attachments, cron = excluded.cron,
            timezone = excluded.timezone, active = excluded.active,
            next_run_at = excluded.next_run_at, updated = pg_catalog.now();
    if v_next is distinct from v_old.next_run_at then
        -- the scheduler sleeps until the earliest next run: wake it to look again
        perform pg_catalog.pg_notify('echovalue_schedule', '');
    end if;
    return true;
end;
$$;

-- A webhook's inbound address: the wallet's mailbox for `default`, its own for the others.
create function echovalue._webhook_email(p_hook echovalue.webhooks) returns text
language sql stable as $$
    select echovalue._mailbox_address(coalesce(p_hook.mailbox,
               (select m.mailbox from echovalue.mailboxes m where m.wallet_id = p_hook.wallet_id)))
$$;

-- A scheduled webhook's schedule as the API shows it (SPEC §13).
create function echovalue._webhook_schedule_json(p_hook echovalue.webhooks) returns text
language sql stable as $$
    select pg_catalog.format(
        '{"cron":%s,"timezone":%s,"active":%s,"nextRunAt":%s,"lastRunAt":%s,"lastStatus":%s,"lastError":%s}',
        echovalue._json_str(p_hook.cron), echovalue._json_str(p_hook.timezone), p_hook.active::text,
        echovalue._json_str(echovalue._ts(p_hook.next_run_at)),
        echovalue._json_str(echovalue._ts(p_hook.last_run_at)),
        echovalue._json_str(p_hook.last_status), echovalue._json_str(p_hook.last_error))
$$;

-- A webhook as the API shows it (WebhookResponse, SPEC §12): header values as `<redacted>`,
-- the values of `routing_key` and of option names holding token, secret or key as `***`;
-- in mailbox mode format, template (custom only), options, includeAttachments and email, in
-- scheduled mode schedule.
create function echovalue._webhook_response(p_hook echovalue.webhooks, p_hash text) returns text
language sql stable as $$
    select pg_catalog.format(
        '{"webhookId":%s,"webhook":%s,"headers":{%s},%s,"hash":%s,"created":%s,"updated":%s}',
        echovalue._json_str(p_hook.name), echovalue._json_str(p_hook.url),
        (select coalesce(pg_catalog.string_agg(echovalue._json_str(e.key) || ':"<redacted>"', ',' order by e.key), '')
           from pg_catalog.jsonb_object_keys(p_hook.headers) e(key)),
        case when p_hook.cron is not null
             then '"schedule":' || echovalue._webhook_schedule_json(p_hook)
             else pg_catalog.format('"format":%s,%s"options":{%s},"includeAttachments":%s,"email":%s',
                 echovalue._json_str(p_hook.format),
                 case when p_hook.template is not null then '"template":' || p_hook.template::text || ',' else '' end,
                 (select coalesce(pg_catalog.string_agg(echovalue._json_str(o.key) || ':' ||
                             case when o.key = 'routing_key' or o.key ~* '(token|secret|key)' then '"***"'
                                  else o.value::text end, ',' order by o.key), '')
                    from pg_catalog.jsonb_each(p_hook.options) o),
                 p_hook.include_attachments::text,
                 echovalue._json_str(echovalue._webhook_email(p_hook))) end,
        echovalue._json_str(p_hash), echovalue._json_str(echovalue._ts(p_hook.created)),
        echovalue._json_str(echovalue._ts(p_hook.updated)))
$$;

-- The answer to a paid call that names webhook p_name of the caller's wallet: its
-- WebhookResponse, or 404 `Webhook Not Found`.
create function echovalue._webhook_answer(
    p_caller echovalue.caller, p_paid echovalue.payment, p_name text
) returns echovalue.outcome
language plpgsql volatile as $$
declare
    v_hook echovalue.webhooks;
begin
    select * into v_hook from echovalue.webhooks h
     where h.wallet_id = p_caller.wallet_id and h.name = p_name;
    if not found then
        return echovalue._finish(p_caller, p_paid, 404, 'Webhook Not Found');
    end if;
    return echovalue._finish(p_caller, p_paid, 200,
        echovalue._webhook_response(v_hook,
            (select w.hash from echovalue.wallets w where w.id = p_caller.wallet_id)),
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
    http_path text default '/webhook'
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
    http_path text default '/webhook'
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
        v_body := pg_catalog.format('{"webhook":%s,"headers":{%s},"email":%s,"hash":%s,"secret":%s',
            echovalue._json_str(v_hook.url),
            (select coalesce(pg_catalog.string_agg(echovalue._json_str(e.key) || ':"<redacted>"', ',' order by e.key), '')
               from pg_catalog.jsonb_object_keys(v_hook.headers) e(key)),
            v_email, echovalue._json_str(v_hash), echovalue._json_str(v_mailbox.secret));
    else
        v_body := pg_catalog.format('{"email":%s,"hash":%s', v_email, echovalue._json_str(v_hash));
    end if;
    v_body := v_body || ',"webhooks":[' || coalesce((
        select pg_catalog.string_agg(echovalue._webhook_response(h, v_hash), ',' order by h.name)
          from echovalue.webhooks h where h.wallet_id = v_caller.wallet_id), '') || ']}';
    return echovalue._finish(v_caller, v_paid, 200, v_body, 'application/json');
end;
$$;

-- DELETE /webhook: deletes `default`; `OK`, or 404 `Webhook Not Found` when there is none.
create function echovalue.webhook_delete(
    token text,
    http_method text default 'DELETE',
    http_path text default '/webhook'
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
    http_path text default null
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
    http_path text default null
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
    http_path text default null
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
    http_path text default null
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
