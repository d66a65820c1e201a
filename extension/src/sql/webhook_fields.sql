-- The fields of a webhook (SPEC §12, §13): the rule each one meets (a `400 Bad Request:
-- <rule>`), how a request body becomes a stored webhook, and how a webhook is shown
-- (WebhookResponse). The API functions that use them are in webhook_api.sql.

-- Why a webhookId is refused, or NULL: 1 to 30 characters of A-Z, a-z, 0-9, _ and -;
-- `call` is reserved.
create function echovalue._webhook_id_error(p_id text) returns text
language sql immutable as $$
    select case
        when p_id is null or p_id !~ '^[A-Za-z0-9_-]{1,30}$'
            then 'Bad Request: webhookId must be 1 to 30 characters of A-Z, a-z, 0-9, _ and -'
        when p_id = 'call' then 'Bad Request: webhookId call is reserved'
    end
$$;

-- Why webhook options are refused, or NULL: an object of at most 10 string values of at most
-- 500 characters each, named by 1 to 64 characters of A-Z, a-z, 0-9, _, . and -.
create function echovalue._webhook_options_error(p_options jsonb) returns text
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

-- Why a schedule (SPEC §13) is refused, or NULL: {"cron": five fields, "timezone": an IANA
-- name, "active": true|false (optional)}; the 30-day rules are checked from now (_schedule_error).
create function echovalue._webhook_schedule_error(p_schedule jsonb) returns text
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

-- Why a webhook's configuration is refused, or NULL. p_config holds the API's fields with
-- every one that is set (a POST or PUT body, or a PATCH body merged into the stored webhook),
-- in one of the two modes;
-- p_template is the custom template's JSON text as written (NULL when none). A JSON null
-- field means its default: no headers, no format, no options, attachments included.
create function echovalue._webhook_config_error(p_config jsonb, p_template text) returns text
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
         cron, timezone, active, next_run_at, updated)
    values (p_wallet, p_name, p_config ->> 'url',
            case when pg_catalog.jsonb_typeof(p_config -> 'headers') = 'object'
                 then p_config -> 'headers' else '{}'::jsonb end,
            coalesce(p_config ->> 'format', ''),
            case when p_config ->> 'format' = 'custom' then p_template::json end,
            case when pg_catalog.jsonb_typeof(p_config -> 'options') = 'object'
                 then p_config -> 'options' else '{}'::jsonb end,
            coalesce((p_config ->> 'includeAttachments')::boolean, true),
            case when p_name <> 'default' then echovalue._mailbox_new(p_wallet) end,
            v_cron, v_zone, v_active, v_next, pg_catalog.now())
    -- (excluded.updated, not now(): Citus takes only immutable functions in DO UPDATE SET)
    on conflict (wallet_id, name) do update
        set url = excluded.url, headers = excluded.headers, format = excluded.format,
            template = excluded.template, options = excluded.options,
            include_attachments = excluded.include_attachments, cron = excluded.cron,
            timezone = excluded.timezone, active = excluded.active,
            next_run_at = excluded.next_run_at, updated = excluded.updated;
    if v_next is distinct from v_old.next_run_at then
        -- the scheduler sleeps until the earliest next run: wake it to look again
        perform pg_catalog.pg_notify('echovalue_schedule', '');
    end if;
    return true;
end;
$$;

-- A webhook's inbound address: the wallet's mailbox for `default`, its own for the others.
create function echovalue._webhook_email(p_hook echovalue.webhooks) returns text
language plpgsql stable as $$
begin
    return (
    select echovalue._mailbox_address(coalesce(p_hook.mailbox,
               (select m.mailbox from echovalue.mailboxes m where m.wallet_id = p_hook.wallet_id))));
end;
$$;

-- A webhook's custom headers as the API shows them: each name, its value `<redacted>`.
create function echovalue._webhook_headers_json(p_headers jsonb) returns text
language sql immutable as $$
    select '{' || coalesce(pg_catalog.string_agg(echovalue._json_str(e.key) || ':"<redacted>"', ','
                                                  order by e.key), '') || '}'
      from pg_catalog.jsonb_object_keys(p_headers) e(key)
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

-- Webhook options as the API shows them: the values of `routing_key` and of option names
-- holding token, secret or key as `***`.
create function echovalue._webhook_options_json(p_options jsonb) returns text
language sql immutable as $$
    select '{' || coalesce(pg_catalog.string_agg(echovalue._json_str(o.key) || ':' ||
                      case when o.key = 'routing_key' or o.key ~* '(token|secret|key)' then '"***"'
                           else o.value::text end, ',' order by o.key), '') || '}'
      from pg_catalog.jsonb_each(p_options) o
$$;

-- A webhook as the API shows it (WebhookResponse, SPEC §12): header values as `<redacted>`,
-- the values of `routing_key` and of option names holding token, secret or key as `***`;
-- in mailbox mode format, template (custom only), options, includeAttachments and email, in
-- scheduled mode schedule.
create function echovalue._webhook_response(p_hook echovalue.webhooks, p_hash text) returns text
language sql stable as $$
    select pg_catalog.format(
        '{"webhookId":%s,"webhook":%s,"headers":%s,%s,"hash":%s,"created":%s,"updated":%s}',
        echovalue._json_str(p_hook.name), echovalue._json_str(p_hook.url),
        echovalue._webhook_headers_json(p_hook.headers),
        case when p_hook.cron is not null
             then '"schedule":' || echovalue._webhook_schedule_json(p_hook)
             else pg_catalog.format('"format":%s,%s"options":%s,"includeAttachments":%s,"email":%s',
                 echovalue._json_str(p_hook.format),
                 case when p_hook.template is not null then '"template":' || p_hook.template::text || ',' else '' end,
                 echovalue._webhook_options_json(p_hook.options),
                 p_hook.include_attachments::text,
                 echovalue._json_str(echovalue._webhook_email(p_hook))) end,
        echovalue._json_str(p_hash), echovalue._json_str(echovalue._ts(p_hook.created)),
        echovalue._json_str(echovalue._ts(p_hook.updated)))
$$;
