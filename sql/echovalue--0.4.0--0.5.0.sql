-- echovalue 0.4.0 -> 0.5.0: named webhooks with formats and custom templates (SPEC §12), the
-- webhook test call, scheduled webhooks (SPEC §13) and the logs type filter (SPEC §14). A wallet's one webhook becomes its webhook `default`;
-- deliveries name the webhook they go to.
--
-- Layout: this head changes tables and data; sql/build/upgrade.py appends the functions that
-- are gone, new or changed, and the grants. tests/run.sh updates every earlier version and
-- compares the catalog with a fresh install.

alter table echovalue.webhooks
    add column name text not null default 'default',
    add column format text not null default '',
    add column template json,
    add column options jsonb not null default '{}'::jsonb,
    add column include_attachments boolean not null default true,
    add column mailbox text unique,
    add column created timestamptz not null default now(),
    add column cron text,
    add column timezone text,
    add column active boolean not null default true,
    add column next_run_at timestamptz,
    add column last_run_at timestamptz,
    add column last_status text,
    add column last_error text;
update echovalue.webhooks set created = updated;
alter table echovalue.webhooks
    drop constraint webhooks_pkey,
    add primary key (wallet_id, name),
    add constraint webhooks_name_check check (name ~ '^[A-Za-z0-9_-]{1,30}$' and name <> 'call'),
    add constraint webhooks_format_check
        check (format in ('', 'slack', 'discord', 'teams', 'telegram', 'pagerduty', 'custom')),
    add constraint webhooks_template_check check ((format = 'custom') = (template is not null)),
    add constraint webhooks_mailbox_check check ((name = 'default') = (mailbox is null)),
    add constraint webhooks_schedule_check check ((cron is null) = (timezone is null)
        and (next_run_at is null or cron is not null)
        and last_status in ('success', 'failure'));
create index webhooks_due_idx on echovalue.webhooks (next_run_at) where next_run_at is not null;

alter table echovalue.deliveries
    add column webhook text not null default 'default',
    add column kind text not null default 'mail',
    add column body text,
    add column scheduled_for timestamptz,
    alter column message_id drop not null,
    add constraint deliveries_kind_check check (
        (kind = 'mail' and message_id is not null and body is null and scheduled_for is null)
        or (kind = 'scheduled' and message_id is null and body is not null and scheduled_for is not null)
        or (kind = 'test' and message_id is null and body is not null and scheduled_for is null));
alter table echovalue.deliveries
    add foreign key (wallet_id) references echovalue.wallets (id) on delete cascade;
drop index echovalue.deliveries_due_idx;
create index deliveries_due_idx on echovalue.deliveries (next_attempt_at)
    where state = 'pending' and kind <> 'test';
create index deliveries_test_idx on echovalue.deliveries (created)
    where state = 'pending' and kind = 'test';
create unique index deliveries_run_idx on echovalue.deliveries (wallet_id, webhook, scheduled_for)
    where kind = 'scheduled';

create index deliveries_unmessaged_idx on echovalue.deliveries (created) where kind <> 'mail';
create index logs_endpoint_idx on echovalue.logs (wallet_id, endpoint, id);

insert into echovalue.prices (operation, credits, endpoint) values
    ('webhook_show', 1, 'webhook'), ('webhook_put', 1, 'webhook'), ('webhook_patch', 1, 'webhook'),
    ('webhook_remove', 1, 'webhook'), ('webhook_test', 1, 'webhook'),
    ('scheduled_run', 2, 'webhook')
on conflict (operation) do nothing;

-- Functions gone, or whose arguments or result changed.

drop function if exists echovalue.logs_get(text, text, text, text);
drop function if exists echovalue._webhook_body_error(text);
drop function if exists echovalue._mail_route(text);

-- Functions new or changed in 0.5.0.

create or replace function echovalue._refusal_operation(p_route text, p_method text) returns text
language sql immutable as $$
    select case
        when p_route in ('/kv/{group}/{key}', '/{group}/{key}') then
            case p_method when 'POST' then 'kv_set' when 'DELETE' then 'kv_delete' else 'kv_get' end
        when p_route = '/webhook' then
            case p_method when 'POST' then 'webhook_set' when 'DELETE' then 'webhook_delete'
                          else 'webhook_get' end
        when p_route = '/webhook/{webhookId}' then
            case p_method when 'PUT' then 'webhook_put' when 'PATCH' then 'webhook_patch'
                          when 'DELETE' then 'webhook_remove' else 'webhook_show' end
        when p_route = '/webhook/{webhookId}/test' then 'webhook_test'
        when p_route = '/token/keys' then
            case p_method when 'POST' then 'token_key_create' else 'token_key_list' end
        when p_route = '/token/keys/{id}' then 'token_key_revoke'
        when p_route = '/recharge' then 'recharge_link'
        when p_route in ('/token', '/') and p_method = 'POST' then 'token_new'
        when p_route in ('/token/logs', '/logs') and p_method = 'GET' then 'logs_entry'
        when p_route in ('/token', '/token/logs', '/', '/logs') then 'wallet_get'
    end
$$;

create or replace function echovalue._logs_type_error(p_type text) returns text
language sql immutable as $$
    select case when p_type is not null and p_type not in
                    ('kv', 'token', 'webhook', 'webhook-delivery', 'email', 'recharge', 'settings')
        then 'Bad Request: type must be one of kv, token, webhook, webhook-delivery, email, recharge, settings'
    end
$$;

create or replace function echovalue._logs_newest(p_wallet bigint, p_type text, p_limit int)
returns setof echovalue.logs
language sql stable as $$
    (select * from echovalue.logs l
      where p_type is null and l.wallet_id = p_wallet and l.expires_at > pg_catalog.now()
      order by l.id desc limit p_limit)
    union all
    (select * from echovalue.logs l
      where p_type is not null and l.wallet_id = p_wallet and l.endpoint = p_type
        and l.expires_at > pg_catalog.now()
      order by l.id desc limit p_limit)
$$;

create or replace function echovalue.logs_get(
    token text,
    n text default null,
    http_method text default 'GET',
    http_path text default '/token/logs',
    -- last, after the common arguments, so callers of 0.4.0's positional form still work
    type text default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(logs_get.token, logs_get.http_method,
                                                            logs_get.http_path);
    v_n int;
    v_k int;
    v_paid echovalue.payment;
    v_entries text;
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    v_n := echovalue._logs_n(logs_get.n);
    if v_n is null then
        -- charged as one entry: the smallest logs request
        return echovalue._fail(v_caller, 'logs_entry', 400, 'Bad Request: n must be a positive integer');
    end if;
    if echovalue._logs_type_error(logs_get.type) is not null then
        return echovalue._fail(v_caller, 'logs_entry', 400, echovalue._logs_type_error(logs_get.type));
    end if;
    select pg_catalog.count(*)::int into v_k
      from echovalue._logs_newest(v_caller.wallet_id, logs_get.type, v_n);
    v_paid := echovalue._pay(v_caller, 'logs_entry', p_units => v_k);
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    -- the wallet row is locked by the charge, so no entry of this wallet appears meanwhile
    select coalesce(pg_catalog.string_agg(echovalue._log_json(l), ',' order by l.id desc), '')
      into v_entries
      from echovalue._logs_newest(v_caller.wallet_id, logs_get.type, v_k) as l;
    return echovalue._finish(v_caller, v_paid, 200, '{"logs":[' || v_entries || '],"n":' || v_k || '}',
                             'application/json');
end;
$$;

create or replace function echovalue._webhook_id_error(p_id text) returns text
language sql immutable as $$
    select case
        when p_id is null or p_id !~ '^[A-Za-z0-9_-]{1,30}$'
            then 'Bad Request: webhookId must be 1 to 30 characters of A-Z, a-z, 0-9, _ and -'
        when p_id = 'call' then 'Bad Request: webhookId call is reserved'
    end
$$;

create or replace function echovalue._webhook_options_error(p_options jsonb) returns text
language plpgsql immutable as $$
declare
    v_name text;
    v_value jsonb;
begin
    if p_options is null or pg_catalog.jsonb_typeof(p_options) = 'null' then
        return null;
    end if;
    if pg_catalog.jsonb_typeof(p_options) <> 'object' then
        return 'Bad Request: options must be an object of strings';
    end if;
    if (select pg_catalog.count(*) from pg_catalog.jsonb_object_keys(p_options)) > 10 then
        return 'Bad Request: at most 10 options';
    end if;
    for v_name, v_value in select e.key, e.value from pg_catalog.jsonb_each(p_options) e order by e.key loop
        if v_name !~ '^[A-Za-z0-9_.-]{1,64}$' then
            return 'Bad Request: option names must be 1 to 64 characters of A-Z, a-z, 0-9, _, . and -';
        end if;
        if pg_catalog.jsonb_typeof(v_value) <> 'string' then
            return pg_catalog.format('Bad Request: option %s must be a string', v_name);
        end if;
        if pg_catalog.char_length(v_value #>> '{}') > 500 then
            return pg_catalog.format('Bad Request: option %s must be at most 500 characters', v_name);
        end if;
    end loop;
    return null;
end;
$$;

create or replace function echovalue._webhook_schedule_error(p_schedule jsonb) returns text
language plpgsql stable as $$
declare
    v_unknown text;
begin
    if pg_catalog.jsonb_typeof(p_schedule) <> 'object' then
        return 'Bad Request: schedule must be an object {"cron","timezone","active"}';
    end if;
    select k into v_unknown from pg_catalog.jsonb_object_keys(p_schedule) k
     where k not in ('cron', 'timezone', 'active') order by k limit 1;
    if v_unknown is not null then
        return pg_catalog.format('Bad Request: unknown field schedule.%s (expected cron, timezone, active)',
                                 pg_catalog.left(v_unknown, 64));
    end if;
    if pg_catalog.jsonb_typeof(p_schedule -> 'cron') is distinct from 'string' then
        return 'Bad Request: schedule.cron must be a string';
    end if;
    if pg_catalog.jsonb_typeof(p_schedule -> 'timezone') is distinct from 'string' then
        return 'Bad Request: schedule.timezone must be a string';
    end if;
    if pg_catalog.jsonb_typeof(p_schedule -> 'active') not in ('boolean', 'null') then
        return 'Bad Request: schedule.active must be true or false';
    end if;
    return echovalue._schedule_error(p_schedule ->> 'cron', p_schedule ->> 'timezone', pg_catalog.now());
end;
$$;

create or replace function echovalue._webhook_config_error(p_config jsonb, p_template text) returns text
language plpgsql stable as $$
declare
    v_unknown text;
    v_format text;
begin
    select k into v_unknown from pg_catalog.jsonb_object_keys(p_config) k
     where k not in ('webhookId', 'url', 'headers', 'format', 'template', 'options', 'includeAttachments',
                     'schedule')
     order by k limit 1;
    if v_unknown is not null then
        return pg_catalog.format('Bad Request: unknown field %s (expected webhookId, url, headers, '
                                 'format, template, options, includeAttachments, schedule)',
                                 pg_catalog.left(v_unknown, 64));
    end if;
    -- mailbox fields at their defaults ("format": "", "options": {}, ...) are no mode
    if pg_catalog.jsonb_typeof(p_config -> 'schedule') <> 'null'
       and (p_template is not null
            or coalesce(p_config ->> 'format', '') <> ''
            or coalesce(p_config -> 'options', 'null'::jsonb) not in ('null'::jsonb, '{}'::jsonb)
            or coalesce(p_config -> 'includeAttachments', 'null'::jsonb) not in ('null'::jsonb, 'true'::jsonb)) then
        return 'Bad Request: a webhook is either a mailbox (format, template, options, '
               'includeAttachments) or scheduled (schedule), not both';
    end if;
    if not p_config ? 'url' or pg_catalog.jsonb_typeof(p_config -> 'url') = 'null' then
        return 'Bad Request: url is required';
    elsif pg_catalog.jsonb_typeof(p_config -> 'url') <> 'string' then
        return 'Bad Request: url must be a string';
    end if;
    v_format := coalesce(p_config ->> 'format', '');
    if pg_catalog.jsonb_typeof(p_config -> 'format') not in ('string', 'null')
       or v_format not in ('', 'slack', 'discord', 'teams', 'telegram', 'pagerduty', 'custom') then
        return 'Bad Request: format must be one of slack, discord, teams, telegram, pagerduty, custom or ""';
    end if;
    if pg_catalog.jsonb_typeof(p_config -> 'includeAttachments') not in ('boolean', 'null') then
        return 'Bad Request: includeAttachments must be true or false';
    end if;
    return coalesce(
        echovalue._webhook_url_error(p_config ->> 'url'),
        echovalue._webhook_headers_error(p_config -> 'headers'),
        case when v_format = 'custom' and p_template is null
                 then 'Bad Request: template is required for format custom'
             when v_format = 'custom' then echovalue._webhook_template_error(p_template)
             when p_template is not null then 'Bad Request: template is only for format custom'
        end,
        echovalue._webhook_options_error(p_config -> 'options'),
        case when pg_catalog.jsonb_typeof(p_config -> 'schedule') <> 'null'
             then echovalue._webhook_schedule_error(p_config -> 'schedule') end,
        case when v_format = 'telegram' and coalesce(p_config -> 'options' ->> 'chat_id', '') = ''
                 then 'Bad Request: options.chat_id is required for format telegram'
             when v_format = 'pagerduty' and coalesce(p_config -> 'options' ->> 'routing_key', '') = ''
                 then 'Bad Request: options.routing_key is required for format pagerduty'
        end);
end;
$$;

create or replace function echovalue._webhook_body_parse(
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

create or replace function echovalue._webhook_config(p_hook echovalue.webhooks) returns jsonb
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

create or replace function echovalue._webhook_store(
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

create or replace function echovalue._webhook_email(p_hook echovalue.webhooks) returns text
language sql stable as $$
    select echovalue._mailbox_address(coalesce(p_hook.mailbox,
               (select m.mailbox from echovalue.mailboxes m where m.wallet_id = p_hook.wallet_id)))
$$;

create or replace function echovalue._webhook_headers_json(p_headers jsonb) returns text
language sql immutable as $$
    select '{' || coalesce(pg_catalog.string_agg(echovalue._json_str(e.key) || ':"<redacted>"', ','
                                                  order by e.key), '') || '}'
      from pg_catalog.jsonb_object_keys(p_headers) e(key)
$$;

create or replace function echovalue._webhook_schedule_json(p_hook echovalue.webhooks) returns text
language sql stable as $$
    select pg_catalog.format(
        '{"cron":%s,"timezone":%s,"active":%s,"nextRunAt":%s,"lastRunAt":%s,"lastStatus":%s,"lastError":%s}',
        echovalue._json_str(p_hook.cron), echovalue._json_str(p_hook.timezone), p_hook.active::text,
        echovalue._json_str(echovalue._ts(p_hook.next_run_at)),
        echovalue._json_str(echovalue._ts(p_hook.last_run_at)),
        echovalue._json_str(p_hook.last_status), echovalue._json_str(p_hook.last_error))
$$;

create or replace function echovalue._webhook_response(p_hook echovalue.webhooks, p_hash text) returns text
language sql stable as $$
    select pg_catalog.format(
        '{"webhookId":%s,"webhook":%s,"headers":%s,%s,"hash":%s,"created":%s,"updated":%s}',
        echovalue._json_str(p_hook.name), echovalue._json_str(p_hook.url),
        echovalue._webhook_headers_json(p_hook.headers),
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

create or replace function echovalue._webhook_answer(
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

create or replace function echovalue._webhook_write(
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

create or replace function echovalue.webhook_set(
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

create or replace function echovalue.webhook_get(
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
        v_body := pg_catalog.format('{"webhook":%s,"headers":%s,"email":%s,"hash":%s,"secret":%s',
            echovalue._json_str(v_hook.url), echovalue._webhook_headers_json(v_hook.headers),
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

create or replace function echovalue.webhook_delete(
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

create or replace function echovalue._webhook_remove(
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

create or replace function echovalue.webhook_show(
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

create or replace function echovalue.webhook_put(
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

create or replace function echovalue.webhook_patch(
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

create or replace function echovalue.webhook_remove(
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

create or replace function echovalue._mail_route(
    p_recipient text, out o_caller echovalue.caller, out o_webhook echovalue.webhooks,
    out o_code int, out o_message text
)
language plpgsql volatile as $$
declare
    v_addr text := pg_catalog.lower(p_recipient);
    v_local text := pg_catalog.substring(v_addr, '^(.+)@[^@]+$');
    v_domain text := pg_catalog.rtrim(pg_catalog.substring(v_addr, '@([^@]+)$'), '.');
    v_wallet bigint;
    v_name text := 'default';
begin
    if v_local is null or pg_catalog.char_length(v_addr) > 254 then
        o_code := 550;
        o_message := '5.1.3 bad recipient address';
        return;
    end if;
    if v_domain <> pg_catalog.lower(echovalue._setting_text('mail_domain')) then
        o_code := 550;
        o_message := '5.7.1 relaying denied: not a domain of this service';
        return;
    end if;
    -- mail to a token's address is paid by that token, within its limits; to a mailbox
    -- address by the wallet, with no token's limits
    if echovalue.token_format_ok(v_local) then
        o_caller := echovalue._wallet_resolve(v_local, 'SMTP', null);
        v_wallet := o_caller.wallet_id;
    else
        select m.wallet_id into v_wallet from echovalue.mailboxes m where m.mailbox = v_local;
        if v_wallet is null then
            select h.wallet_id, h.name into v_wallet, v_name from echovalue.webhooks h where h.mailbox = v_local;
        end if;
        o_caller.wallet_id := v_wallet;
        o_caller.method := 'SMTP';
    end if;
    if v_wallet is null then
        o_caller := null;
        o_code := 550;
        o_message := '5.1.1 no such mailbox';
        return;
    end if;
    select * into o_webhook from echovalue.webhooks h where h.wallet_id = v_wallet and h.name = v_name;
    if not found then
        o_caller := null;
        o_code := 550;
        o_message := '5.1.1 mailbox has no webhook configured';
    elsif o_webhook.cron is not null then
        o_caller := null;
        o_code := 550;
        o_message := '5.1.1 the webhook of this mailbox is scheduled and takes no mail';
    end if;
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

create or replace function echovalue._mail_payload(
    p_external_id text, p_received_at timestamptz, p_from_email text, p_from_name text,
    p_hash text, p_subject text, p_text text, p_html text, p_headers text, p_attachments text
) returns text
language sql stable as $$
    select pg_catalog.format(
               '{"externalMessageId":%s,"receivedAt":%s,"from":{"email":%s,"name":%s},"to":{"hash":%s},'
               '"subject":%s,"text":%s,"html":%s,"headers":%s,"attachments":%s}',
               echovalue._json_str(p_external_id), echovalue._json_str(echovalue._ts(p_received_at)),
               echovalue._json_str(p_from_email), echovalue._json_str(p_from_name),
               echovalue._json_str(p_hash), echovalue._json_str(p_subject),
               echovalue._json_str(p_text), echovalue._json_str(p_html), p_headers, p_attachments)
$$;

create or replace function echovalue._delivery_payload(p_wallet bigint, p_message bigint) returns text
language sql stable as $$
    select echovalue._mail_payload(m.external_id, m.received_at, m.from_email, m.from_name, w.hash,
                                   m.subject, m.text_body, m.html_body, m.headers::text,
                                   echovalue._attachments_json(m.wallet_id, m.id))
      from echovalue.messages m
      join echovalue.wallets w on w.id = m.wallet_id
     where m.wallet_id = p_wallet and m.id = p_message
$$;

create or replace function echovalue._test_claim_window() returns interval
language sql immutable as $$ select interval '2 seconds' $$;

-- Leases up to p_batch due deliveries for p_lease seconds and counts the attempt: fresh tests
-- first (a caller waits for each), then the others, oldest due first; FOR UPDATE SKIP LOCKED,
-- each on its own index. A test gets one attempt, and none once its window has passed.
create function echovalue._delivery_lease(p_batch int, p_lease int)
returns table (wallet_id bigint, id bigint, message_id bigint, attempts int, webhook_id text,
               webhook text, kind text, body text)
language plpgsql volatile as $$
declare
    v_due bigint[];
begin
    v_due := array(
        select d.id from echovalue.deliveries d
         where d.state = 'pending' and d.kind = 'test' and d.attempts = 0
           and d.created > pg_catalog.now() - echovalue._test_claim_window()
         order by d.created
         limit p_batch
         for update skip locked);
    if pg_catalog.cardinality(v_due) < p_batch then
        v_due := v_due || array(
            select d.id from echovalue.deliveries d
             where d.state = 'pending' and d.kind <> 'test' and d.next_attempt_at <= pg_catalog.now()
             order by d.next_attempt_at, d.id
             limit p_batch - pg_catalog.cardinality(v_due)
             for update skip locked);
    end if;
    return query
        update echovalue.deliveries d
           set attempts = d.attempts + 1,
               next_attempt_at = pg_catalog.now() + pg_catalog.make_interval(secs => p_lease)
         where d.id = any (v_due)
        returning d.wallet_id, d.id, d.message_id, d.attempts, d.webhook_id, d.webhook, d.kind, d.body;
end;
$$;

create or replace function echovalue.delivery_claim(batch int default 50, lease_seconds int default 60)
returns table (delivery_id bigint, attempt int, webhook_id text, url text, url_error text,
               headers jsonb, secret text, payload text)
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_row record;
    v_claimed int;
    v_returned int;
    v_format text;
    v_options jsonb;
    v_template text;
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
            select h.url, h.headers, mb.secret, h.format, h.options, h.template::text
              into url, headers, secret, v_format, v_options, v_template
              from echovalue.webhooks h
              join echovalue.mailboxes mb on mb.wallet_id = h.wallet_id
             where h.wallet_id = v_row.wallet_id and h.name = v_row.webhook;
            if not found then
                update echovalue.deliveries d
                   set state = 'failed', last_status = null, last_error = 'no webhook configured'
                 where d.wallet_id = v_row.wallet_id and d.id = v_row.id;
                perform echovalue._delivery_log(v_row.wallet_id, v_row.webhook_id, 0, 'no webhook configured');
                if v_row.kind = 'test' then
                    perform pg_catalog.pg_notify('echovalue_webhook_test', v_row.id || ':' || v_row.webhook_id);
                end if;
                continue;
            end if;
            delivery_id := v_row.id;
            attempt := v_row.attempts;
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

create or replace function echovalue.delivery_record(
    delivery_id bigint,
    attempt int,
    outcome text,
    status_code int default null,
    error text default null,
    retry_seconds int default null
) returns boolean
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_wallet bigint;
    v_webhook_id text;
    v_kind text;
    v_error text := pg_catalog.left(delivery_record.error, 500);
    v_changed boolean := false;
begin
    if delivery_record.outcome is null or delivery_record.outcome not in ('delivered', 'retry', 'failed')
       or (delivery_record.outcome = 'retry' and coalesce(delivery_record.retry_seconds, -1) < 0) then
        raise exception 'echovalue: delivery_record needs outcome delivered, failed, or retry with retry_seconds >= 0'
            using errcode = 'invalid_parameter_value';
    end if;
    -- a test is never retried: its one attempt's retry is its failure
    update echovalue.deliveries d
       set state = case when delivery_record.outcome <> 'retry' then delivery_record.outcome
                        when d.kind = 'test' then 'failed' else 'pending' end,
           next_attempt_at = case when delivery_record.outcome = 'retry' and d.kind <> 'test'
               then pg_catalog.now() + pg_catalog.make_interval(secs => delivery_record.retry_seconds)
               else d.next_attempt_at end,
           last_status = delivery_record.status_code,
           last_error = v_error
     where d.id = delivery_record.delivery_id
       and d.state = 'pending'
       and (delivery_record.outcome = 'delivered' or d.attempts = delivery_record.attempt)
    returning d.wallet_id, d.webhook_id, d.kind into v_wallet, v_webhook_id, v_kind;
    v_changed := found;
    if v_kind = 'test' then
        perform pg_catalog.pg_notify('echovalue_webhook_test',
                                     delivery_record.delivery_id || ':' || v_webhook_id);
    elsif v_kind = 'scheduled' then
        -- the webhook shows how its latest run went
        update echovalue.webhooks h
           set last_status = case when delivery_record.outcome = 'delivered' then 'success' else 'failure' end,
               last_error = case when delivery_record.outcome = 'delivered' then null
                                 else coalesce(v_error, 'delivery failed') end
          from echovalue.deliveries d
         where d.id = delivery_record.delivery_id
           and h.wallet_id = d.wallet_id and h.name = d.webhook
           and h.last_run_at <= d.created;
    end if;
    if not v_changed then
        select d.wallet_id, d.webhook_id into v_wallet, v_webhook_id
          from echovalue.deliveries d where d.id = delivery_record.delivery_id;
        if not found then
            return false;   -- purged with its wallet or message
        end if;
    end if;
    perform echovalue._delivery_log(v_wallet, v_webhook_id, coalesce(delivery_record.status_code, 0),
                                    case when delivery_record.outcome = 'delivered' then null
                                         else coalesce(v_error, 'delivery failed') end);
    return v_changed;
end;
$$;

create or replace function echovalue.maintenance_run() returns jsonb
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_batch int := echovalue._setting('maintenance_batch');
    v_kv bigint;
    v_logs bigint;
    v_rate bigint;
    v_usage bigint;
    v_revoked bigint;
    v_attachments bigint;
    v_messages bigint;
    v_unmessaged bigint;
    v_wallets bigint;
    v_wallet_ids bigint[];
    v_token_ids bigint[];
begin
    delete from echovalue.kv k
     where k.ctid = any (array(
         select x.ctid from echovalue.kv x
          where x.expires_at <= pg_catalog.now()
          limit v_batch for update skip locked));
    get diagnostics v_kv = row_count;

    delete from echovalue.logs l
     where l.ctid = any (array(
         select x.ctid from echovalue.logs x
          where x.expires_at <= pg_catalog.now()
          limit v_batch for update skip locked));
    get diagnostics v_logs = row_count;

    delete from echovalue.token_rate r
     where r.ctid = any (array(
         select x.ctid from echovalue.token_rate x
          where x.last_at <= pg_catalog.now()
                - pg_catalog.make_interval(secs => echovalue._setting('token_rate_seconds'))
          limit v_batch for update skip locked));
    get diagnostics v_rate = row_count;

    -- Usage buckets older than the longest window (30 days, plus the hour it starts in).
    delete from echovalue.token_usage u
     where u.ctid = any (array(
         select x.ctid from echovalue.token_usage x
          where x.hour < pg_catalog.date_trunc('hour', pg_catalog.now() - interval '30 days', 'UTC')
          limit v_batch for update skip locked));
    get diagnostics v_usage = row_count;

    -- Revoked tokens, once they have been listed as revoked long enough; their usage goes by
    -- ON DELETE CASCADE.
    delete from echovalue.tokens t
     where t.id = any (array(
         select x.id from echovalue.tokens x
          where x.revoked < pg_catalog.now()
                - pg_catalog.make_interval(days => echovalue._setting('revoked_token_days'))
          limit v_batch for update skip locked));
    get diagnostics v_revoked = row_count;

    delete from echovalue.attachments a
     where a.ctid = any (array(
         select x.ctid from echovalue.attachments x
          where x.created <= pg_catalog.now()
                - pg_catalog.make_interval(hours => echovalue._setting('attachment_retention_hours'))
          limit v_batch for update skip locked));
    get diagnostics v_attachments = row_count;

    -- Messages whose delivery is finished (delivered or failed for good), older than
    -- echovalue.message_retention_hours; their delivery row and attachments go by ON DELETE
    -- CASCADE. A pending delivery keeps its message however old.
    delete from echovalue.messages m
     where m.id = any (array(
         select x.id from echovalue.messages x
          where x.received_at <= pg_catalog.now()
                - pg_catalog.make_interval(hours => echovalue._setting('message_retention_hours'))
            and not exists (select 1 from echovalue.deliveries d
                             where d.wallet_id = x.wallet_id and d.message_id = x.id and d.state = 'pending')
          limit v_batch for update skip locked));
    get diagnostics v_messages = row_count;

    -- Runs and tests (no message) after the same time: finished runs, and every test (a test
    -- is answered within seconds).
    delete from echovalue.deliveries d
     where d.ctid = any (array(
         select x.ctid from echovalue.deliveries x
          where x.kind <> 'mail' and (x.kind = 'test' or x.state <> 'pending')
            and x.created <= pg_catalog.now()
                - pg_catalog.make_interval(hours => echovalue._setting('message_retention_hours'))
          limit v_batch for update skip locked));
    get diagnostics v_unmessaged = row_count;

    -- A request may lock its token (recording last_used), then its wallet. Here the wallets
    -- are locked first, so a token a request already holds is only tried with SKIP LOCKED and
    -- its wallet is left for a later run: maintenance never waits for a request, so the two
    -- cannot deadlock.
    v_wallet_ids := array(
        select x.id from echovalue.wallets x
         where x.last_used < pg_catalog.now()
               - pg_catalog.make_interval(days => echovalue._setting('inactive_days'))
         limit v_batch for update skip locked);
    v_token_ids := array(
        select t.id from echovalue.tokens t
         where t.wallet_id = any (v_wallet_ids) for update skip locked);
    -- tokens and kv of these wallets go by ON DELETE CASCADE, logs (no foreign key) here
    with gone as (
        delete from echovalue.wallets w
         where w.id = any (v_wallet_ids)
           and not exists (select 1 from echovalue.tokens t
                            where t.wallet_id = w.id and t.id <> all (v_token_ids))
        returning w.id
    ), gone_logs as (
        delete from echovalue.logs l where l.wallet_id in (select g.id from gone g)
    )
    select pg_catalog.count(*) into v_wallets from gone;

    return pg_catalog.jsonb_build_object(
        'kv', v_kv, 'logs', v_logs, 'token_rate', v_rate, 'token_usage', v_usage,
        'revoked_tokens', v_revoked, 'attachments', v_attachments, 'messages', v_messages, 'runs_and_tests', v_unmessaged,
        'wallets', v_wallets);
end;
$$;

create or replace function echovalue._schedule_run_body(p_hook echovalue.webhooks, p_for timestamptz)
returns text
language sql stable as $$
    select pg_catalog.format(
        '{"type":"scheduled_webhook_run","webhookId":%s,"scheduledFor":%s,"executedAt":%s,"walletHash":%s}',
        echovalue._json_str(p_hook.name), echovalue._json_str(echovalue._ts(p_for)),
        echovalue._json_str(echovalue._ts(pg_catalog.now())), echovalue._json_str(w.hash))
      from echovalue.wallets w
     where w.id = p_hook.wallet_id
$$;

create or replace function echovalue.schedule_claim(batch int default 100) returns int
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    c_unpaid constant text := 'Insufficient credits: the run was skipped';
    v_hook echovalue.webhooks;
    v_for timestamptz;
    v_caller echovalue.caller;
    v_paid echovalue.payment;
    v_id bigint;
    v_status text;
    v_error text;
    v_ran timestamptz;
    v_n int := 0;
begin
    if schedule_claim.batch is null or schedule_claim.batch not between 1 and 10000 then
        raise exception 'echovalue: schedule_claim needs batch 1..10000'
            using errcode = 'invalid_parameter_value';
    end if;
    -- a webhook whose row or wallet another transaction holds is skipped and does not count
    for v_hook in
        select h.* from echovalue.webhooks h
          join echovalue.wallets w on w.id = h.wallet_id
         where h.next_run_at is not null and h.next_run_at <= pg_catalog.now()
         order by h.next_run_at
         limit schedule_claim.batch
         for update of h skip locked
         for no key update of w skip locked
    loop
        v_n := v_n + 1;
        v_status := v_hook.last_status;
        v_error := v_hook.last_error;
        v_ran := v_hook.last_run_at;
        begin
            v_for := greatest(v_hook.next_run_at,
                              echovalue.schedule_latest(v_hook.cron, v_hook.timezone, pg_catalog.now()));
            v_caller := row(v_hook.wallet_id, null, null, null, null, null, 'CRON',
                            '/webhook/' || v_hook.name)::echovalue.caller;
            if exists (select 1 from echovalue.deliveries d
                        where d.wallet_id = v_hook.wallet_id and d.webhook = v_hook.name
                          and d.kind = 'scheduled' and d.scheduled_for = v_for) then
                -- already run: cannot happen while next_run_at only moves forward; the unique
                -- index (webhook, occurrence) is the guard
                null;
            elsif v_hook.last_error = c_unpaid
                  and (select w.balance from echovalue.wallets w where w.id = v_hook.wallet_id)
                      < (echovalue._price('scheduled_run')).credits then
                -- still unpaid: recorded and logged at the first skip of the streak; a wallet
                -- kept only by its schedules is not "used" and goes after echovalue.inactive_days
                null;
            else
                v_paid := echovalue._pay(v_caller, 'scheduled_run');
                v_ran := pg_catalog.now();
                if v_paid.balance is null then
                    v_status := 'failure';
                    v_error := c_unpaid;
                else
                    insert into echovalue.deliveries as d (wallet_id, webhook, kind, body, scheduled_for)
                    values (v_hook.wallet_id, v_hook.name, 'scheduled',
                            echovalue._schedule_run_body(v_hook, v_for), v_for)
                    returning d.id into v_id;
                    perform echovalue._finish(v_caller, v_paid, 200, null);
                    v_status := null;
                    v_error := null;
                    perform pg_catalog.pg_notify('echovalue_mail', v_id::text);
                end if;
            end if;
            update echovalue.webhooks h
               set next_run_at = echovalue.schedule_next(h.cron, h.timezone, greatest(pg_catalog.now(), v_for)),
                   last_run_at = v_ran, last_status = v_status, last_error = v_error
             where h.wallet_id = v_hook.wallet_id and h.name = v_hook.name;
        exception when others then
            -- one webhook's failure must not hold up every other schedule
            raise warning 'echovalue: planning a run of webhook % of wallet % failed: %',
                v_hook.name, v_hook.wallet_id, sqlerrm;
            update echovalue.webhooks h
               set next_run_at = pg_catalog.now() + interval '1 minute', last_status = 'failure',
                   last_error = 'the run could not be planned; it is tried again in a minute'
             where h.wallet_id = v_hook.wallet_id and h.name = v_hook.name;
        end;
    end loop;
    return v_n;
end;
$$;

create or replace function echovalue.schedule_next_due() returns timestamptz
language sql stable security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
    select h.next_run_at from echovalue.webhooks h
     where h.next_run_at is not null
     order by h.next_run_at
     limit 1
$$;

create or replace function echovalue._webhook_sample(p_wallet bigint, p_name text) returns text
language sql volatile as $$
    select echovalue._mail_payload(
               'test-' || pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', '') || '@' || d.domain,
               pg_catalog.now(), 'test@' || d.domain, 'echovalue', w.hash, 'Test webhook from echovalue',
               pg_catalog.format('This is a test delivery of your webhook %s.', p_name), null, '{}', '[]')
      from echovalue.wallets w,
           (select pg_catalog.lower(echovalue._setting_text('mail_domain')) as domain) d
     where w.id = p_wallet
$$;

create or replace function echovalue.webhook_test(
    token text,
    webhook_id text,
    http_method text default 'POST',
    http_path text default null
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
    v_out.headers := coalesce(v_out.headers, '{}'::jsonb)
                     || pg_catalog.jsonb_build_object('x-echovalue-await', v_id || ':' || v_webhook_id);
    return v_out;
end;
$$;

create or replace function echovalue.webhook_test_result(test text, final boolean default false)
returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_m text[] := pg_catalog.regexp_match(webhook_test_result.test, '^([1-9][0-9]{0,17}):(msg_[0-9a-f]{32})$');
    v_row echovalue.deliveries;
    v_why text;
begin
    if v_m is null then
        raise exception 'echovalue: webhook_test_result needs the x-echovalue-await value of a test'
            using errcode = 'invalid_parameter_value';
    end if;
    -- locked: a claim (SKIP LOCKED) cannot take it while this decides, nor a record change it
    select * into v_row from echovalue.deliveries d
     where d.id = v_m[1]::bigint and d.webhook_id = v_m[2] and d.kind = 'test'
       for update;
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

CREATE  FUNCTION "_schedule_error"(
	"cron" TEXT, /* Option < & str > */
	"timezone" TEXT, /* Option < & str > */
	"from" timestamp with time zone /* Option < TimestampWithTimeZone > */
) RETURNS TEXT /* Option < String > */
IMMUTABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'schedule_error_wrapper';

CREATE  FUNCTION "_webhook_body"(
	"p_format" TEXT, /* Option < & str > */
	"p_options" jsonb, /* Option < JsonB > */
	"p_template" TEXT, /* Option < & str > */
	"p_payload" TEXT /* Option < & str > */
) RETURNS TEXT /* Option < String > */
IMMUTABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'body_sql_wrapper';

CREATE  FUNCTION "_webhook_template_error"(
	"p_template" TEXT /* Option < & str > */
) RETURNS TEXT /* Option < String > */
IMMUTABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'template_error_sql_wrapper';

CREATE  FUNCTION "schedule_latest"(
	"cron" TEXT, /* & str */
	"timezone" TEXT, /* & str */
	"until" timestamp with time zone /* TimestampWithTimeZone */
) RETURNS timestamp with time zone /* Option < TimestampWithTimeZone > */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'schedule_latest_wrapper';

CREATE  FUNCTION "schedule_next"(
	"cron" TEXT, /* & str */
	"timezone" TEXT, /* & str */
	"after" timestamp with time zone /* TimestampWithTimeZone */
) RETURNS timestamp with time zone /* Option < TimestampWithTimeZone > */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'schedule_next_wrapper';

-- Privileges, as in a fresh install (extension/src/sql/grants.sql).

-- Privileges, last: PUBLIC gets nothing; echovalue_api (the proxy) may use the schema and
-- execute the API functions only; echovalue_worker (the mailhook) only the worker functions.
-- Neither can read or write any table or call an internal `_` helper.

do $$
begin
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'echovalue_api') then
        create role echovalue_api nologin;
    end if;
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'echovalue_worker') then
        create role echovalue_worker nologin;
    end if;
end;
$$;

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
    echovalue.stripe_event_record(text, text, text),
    echovalue.maintenance_run()
to echovalue_api;

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
    echovalue.stripe_event_apply()
to echovalue_worker;
