-- Wallet settings and alerts (SPEC §14): a low-balance threshold, and where its alerts go (a
-- webhook with a format, an email address). The charge that takes a balance below the
-- threshold queues the alert in its own transaction (_pay calls _alert_low_balance), and a
-- recharge queues `wallet.recharged` (_stripe_event_credit): alerts are deliveries, sent,
-- signed, retried and logged like every other (delivery.sql), or emails through the
-- operator's SMTP relay, which the mailhook sends (alert_email_claim, delivery_record).

-- Where a wallet's alerts go; its threshold is echovalue.wallets.low_balance_threshold. The
-- webhook fields are a mailbox webhook's (SPEC §12): url (NULL: no alert webhook), headers,
-- format, template (custom only) and options.
create table echovalue.wallet_settings (
    wallet_id bigint primary key references echovalue.wallets (id) on delete cascade,
    url       text,
    headers   jsonb not null default '{}'::jsonb,
    format    text not null default ''
        check (format in ('', 'slack', 'discord', 'teams', 'telegram', 'pagerduty', 'custom')),
    template  json,
    options   jsonb not null default '{}'::jsonb,
    email     text check (pg_catalog.char_length(email) <= 254),
    updated   timestamptz not null default now(),
    constraint wallet_settings_template_check check ((format = 'custom') = (template is not null)),
    constraint wallet_settings_url_check check (url is not null or (format = '' and headers = '{}'::jsonb
                                                                    and options = '{}'::jsonb))
);
select pg_catalog.pg_extension_config_dump('echovalue.wallet_settings', '');

-- The SMTP relay the mailhook sends alert emails through, as the mailhook announces it at
-- start (relay_register): its From address. No row: no relay, and email alerts are refused.
-- The relay's host and credentials stay in the mailhook's configuration.
create table echovalue.mail_relay (
    only_row     boolean primary key default true check (only_row),
    from_address text not null,
    updated      timestamptz not null default now()
);

-- Why an email address is refused, or NULL: at most 254 characters, a local part of at most
-- 64 of the characters RFC 5322 allows unquoted (dots between, never two together), `@`, and
-- a domain of DNS labels with at least one dot. No quoting, comments or spaces, so the
-- address can never carry a header or a second recipient.
create function echovalue._email_address_error(p_what text, p_email text) returns text
language sql immutable as $$
    select case
        when p_email is null or pg_catalog.char_length(p_email) > 254
             or pg_catalog.char_length(pg_catalog.split_part(p_email, '@', 1)) > 64
             or p_email !~ ('^[A-Za-z0-9!#$%&''*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&''*+/=?^_`{|}~-]+)*'
                            '@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+'
                            '[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$')
        then pg_catalog.format('Bad Request: %s must be an email address of at most 254 characters',
                               p_what)
    end
$$;

-- The call of a mailhook with a relay, at start: the relay it sends alert emails through (its
-- From address). NULL removes the relay (an operator's call: a mailhook without a relay
-- leaves the row to the others). Email alerts can be set, and are queued, only while a relay
-- is registered; those queued before it went wait for the next one.
create function echovalue.relay_register(from_address text) returns void
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
begin
    if relay_register.from_address is null then
        delete from echovalue.mail_relay;
        return;
    end if;
    if echovalue._email_address_error('from_address', relay_register.from_address) is not null then
        raise exception 'echovalue: relay_register needs a From address: %',
            echovalue._email_address_error('from_address', relay_register.from_address)
            using errcode = 'invalid_parameter_value';
    end if;
    insert into echovalue.mail_relay as r (from_address, updated)
    values (relay_register.from_address, pg_catalog.now())
    on conflict (only_row) do update set from_address = excluded.from_address, updated = excluded.updated;
end;
$$;

-- Queues alert p_payload (its JSON text) to where the wallet's settings send alerts: a
-- delivery to the alert webhook, its body in the webhook's format, and one email. Called in
-- the transaction of the charge or recharge it is about, so an alert is queued exactly when
-- that commits.
create function echovalue._alert_queue(p_wallet bigint, p_payload text) returns void
language plpgsql volatile as $$
declare
    v_settings echovalue.wallet_settings;
    v_email jsonb;
begin
    select * into v_settings from echovalue.wallet_settings s where s.wallet_id = p_wallet;
    if not found then
        return;
    end if;
    if v_settings.url is not null then
        insert into echovalue.deliveries (wallet_id, webhook, kind, body)
        values (p_wallet, null, 'alert', echovalue._webhook_body(v_settings.format,
                    v_settings.options, v_settings.template::text, p_payload));
        perform pg_catalog.pg_notify('echovalue_mail', '');
    end if;
    -- (without a relay there is no email to send: it would never leave the queue)
    if v_settings.email is not null and exists (select from echovalue.mail_relay) then
        v_email := echovalue._alert_email(p_payload)
                   || pg_catalog.jsonb_build_object('to', v_settings.email);
        insert into echovalue.deliveries (wallet_id, webhook, kind, body)
        values (p_wallet, null, 'alert_email', v_email::text);
        perform pg_catalog.pg_notify('echovalue_alert_email', '');
    end if;
end;
$$;

-- A charge took the balance of p_wallet from at least its threshold to p_balance, below it:
-- the low-balance alert. Once per incident without any flag: the balance must be back at or
-- above the threshold before a charge can cross it again, and charges of a wallet are
-- serialized by its row lock, so 100 parallel charges cross it once.
create function echovalue._alert_low_balance(p_wallet bigint, p_balance bigint, p_threshold bigint)
returns void
language plpgsql volatile as $$
declare
    v_hash text;
begin
    -- (the hash read by a statement of its own: on Citus a query of the wallet's row runs
    -- whole on its shard, where the alert could not be queued)
    select w.hash into v_hash from echovalue.wallets w where w.id = p_wallet;
    if found then
        perform echovalue._alert_queue(p_wallet, pg_catalog.format(
            '{"type":"wallet.low_balance","wallet":%s,"threshold":%s,"token_hash":%s}',
            p_balance, p_threshold, echovalue._json_str(v_hash)));
    end if;
end;
$$;

-- A recharge added p_credits: `wallet.recharged`.
create function echovalue._alert_recharged(p_wallet bigint, p_credits bigint, p_balance bigint)
returns void
language plpgsql volatile as $$
declare
    v_hash text;
begin
    -- (read first, as in _alert_low_balance)
    select w.hash into v_hash from echovalue.wallets w
     where w.id = p_wallet and w.low_balance_threshold > 0;   -- threshold 0: alerts are off
    if found then
        perform echovalue._alert_queue(p_wallet, pg_catalog.format(
            '{"type":"wallet.recharged","credits":%s,"wallet":%s,"token_hash":%s}',
            p_credits, p_balance, echovalue._json_str(v_hash)));
    end if;
end;
$$;

-- Leases up to `batch` due alert emails for `lease_seconds` (like delivery_claim) and returns
-- what sending each needs: the delivery id and attempt (for delivery_record), its Message-ID
-- (the delivery's webhook_id, stable across retries), the recipient, subject and text, and
-- the wallet (delivery_record's routing hint).
create function echovalue.alert_email_claim(batch int default 10, lease_seconds int default 60)
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

-- Why a PUT /token/settings body is refused, or NULL (SPEC §14). p_settings is the body;
-- p_template the JSON text of low_balance_webhook.template as written (NULL when none). The
-- webhook meets a mailbox webhook's rules (_webhook_config_error), the email the address
-- rule, and an email needs the relay.
create function echovalue._settings_error(p_settings jsonb, p_template text) returns text
language plpgsql stable as $$
declare
    v_unknown text;
    v_threshold jsonb := p_settings -> 'low_balance_threshold';
    v_webhook jsonb := p_settings -> 'low_balance_webhook';
    v_email jsonb := p_settings -> 'low_balance_email';
begin
    select k into v_unknown from pg_catalog.jsonb_object_keys(p_settings) k
     where k not in ('low_balance_threshold', 'low_balance_webhook', 'low_balance_email')
     order by k limit 1;
    if v_unknown is not null then
        return pg_catalog.format('Bad Request: unknown field %s (expected low_balance_threshold, '
                                 'low_balance_webhook, low_balance_email)', pg_catalog.left(v_unknown, 64));
    end if;
    if pg_catalog.jsonb_typeof(v_threshold) <> 'null'
       and (pg_catalog.jsonb_typeof(v_threshold) <> 'number'
            or v_threshold::numeric <> pg_catalog.trunc(v_threshold::numeric)
            or v_threshold::numeric not between 0 and 1e15) then
        return 'Bad Request: low_balance_threshold must be an integer from 0 to 1000000000000000';
    end if;
    if pg_catalog.jsonb_typeof(v_webhook) not in ('object', 'null') then
        return 'Bad Request: low_balance_webhook must be a JSON object or null';
    end if;
    if pg_catalog.jsonb_typeof(v_webhook) = 'object' then
        select k into v_unknown from pg_catalog.jsonb_object_keys(v_webhook) k
         where k not in ('url', 'headers', 'format', 'template', 'options')
         order by k limit 1;
        if v_unknown is not null then
            return pg_catalog.format('Bad Request: low_balance_webhook: unknown field %s (expected url, '
                                     'headers, format, template, options)', pg_catalog.left(v_unknown, 64));
        end if;
        if echovalue._webhook_config_error(v_webhook, p_template) is not null then
            return pg_catalog.regexp_replace(echovalue._webhook_config_error(v_webhook, p_template),
                                             '^Bad Request: ', 'Bad Request: low_balance_webhook: ');
        end if;
    end if;
    if pg_catalog.jsonb_typeof(v_email) <> 'null' then
        if pg_catalog.jsonb_typeof(v_email) <> 'string' then
            return 'Bad Request: low_balance_email must be a string or null';
        end if;
        if echovalue._email_address_error('low_balance_email', v_email #>> '{}') is not null then
            return echovalue._email_address_error('low_balance_email', v_email #>> '{}');
        end if;
        if not exists (select from echovalue.mail_relay) then
            return 'Bad Request: low_balance_email needs an SMTP relay, and none is configured';
        end if;
    end if;
    return null;
end;
$$;

-- GET /token/settings: {"low_balance_threshold":N,"low_balance_webhook":{…}|null,
-- "low_balance_email":"…"|null}, the webhook's header values `<redacted>` and its secret-like
-- options `***` (as in WebhookResponse).
create function echovalue.settings_get(
    token text,
    http_method text default 'GET',
    http_path text default '/token/settings',
    wallet bigint default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(settings_get.token,
        settings_get.http_method, settings_get.http_path);
    v_paid echovalue.payment;
    v_body text;
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    v_paid := echovalue._pay(v_caller, 'settings_get');
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    select pg_catalog.format('{"low_balance_threshold":%s,"low_balance_webhook":%s,"low_balance_email":%s}',
               w.low_balance_threshold,
               case when s.url is null then 'null'
                    else pg_catalog.format('{"url":%s,"headers":%s,"format":%s,%s"options":%s}',
                        echovalue._json_str(s.url), echovalue._webhook_headers_json(s.headers),
                        echovalue._json_str(s.format),
                        case when s.template is not null then '"template":' || s.template::text || ',' else '' end,
                        echovalue._webhook_options_json(s.options)) end,
               echovalue._json_str(s.email))
      into v_body
      from echovalue.wallets w
      left join echovalue.wallet_settings s on s.wallet_id = w.id
     where w.id = v_caller.wallet_id;
    return echovalue._finish(v_caller, v_paid, 200, v_body, 'application/json');
end;
$$;

-- PUT /token/settings: replaces the wallet's settings with the body (every field optional:
-- threshold 0, no webhook, no email); `OK`. A new threshold takes effect from the next
-- charge: a balance already below it alerts only once it has been back above. Needs the
-- settings scope, and for a low_balance_webhook the webhook scope too.
create function echovalue.settings_put(
    token text,
    body text,
    http_method text default 'PUT',
    http_path text default '/token/settings',
    wallet bigint default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(settings_put.token,
        settings_put.http_method, settings_put.http_path);
    v_error text;
    v_settings jsonb;
    v_hook jsonb;
    v_template text;
    v_paid echovalue.payment;
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    select b.p_error, b.p_config into v_error, v_settings
      from echovalue._webhook_body_parse(settings_put.body) b;
    v_hook := v_settings -> 'low_balance_webhook';
    if v_error is null and pg_catalog.jsonb_typeof(v_hook -> 'template') <> 'null' then
        v_template := (settings_put.body::json -> 'low_balance_webhook' -> 'template')::text;
    end if;
    -- an alert webhook is signed with the wallet's webhook secret, and a custom template
    -- writes any body: setting one takes the webhook scope as well, or a settings-only token
    -- could have mail-like payloads signed for its own URL
    if pg_catalog.jsonb_typeof(v_hook) = 'object' and not echovalue._has_scope(v_caller, 'webhook') then
        return echovalue._fail(v_caller, 'settings_put', 403, 'Forbidden');
    end if;
    v_error := coalesce(v_error, echovalue._settings_error(v_settings, v_template));
    if v_error is not null then
        return echovalue._fail(v_caller, 'settings_put', 400, v_error);
    end if;
    v_paid := echovalue._pay(v_caller, 'settings_put');
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    if pg_catalog.jsonb_typeof(v_hook) <> 'object' then
        v_hook := '{}';
    else
        -- the signing secret of alert deliveries is the wallet's (SPEC §7)
        perform echovalue._mailbox_ensure(v_caller.wallet_id);
    end if;
    update echovalue.wallets w
       set low_balance_threshold = coalesce((v_settings ->> 'low_balance_threshold')::numeric::bigint, 0)
     where w.id = v_caller.wallet_id;
    insert into echovalue.wallet_settings as s
        (wallet_id, url, headers, format, template, options, email, updated)
    values (v_caller.wallet_id, v_hook ->> 'url',
            coalesce(nullif(v_hook -> 'headers', 'null'::jsonb), '{}'),
            coalesce(v_hook ->> 'format', ''), v_template::json,
            coalesce(nullif(v_hook -> 'options', 'null'::jsonb), '{}'),
            v_settings ->> 'low_balance_email', pg_catalog.now())
    -- (excluded.updated, not now(): Citus takes only immutable functions in DO UPDATE SET)
    on conflict (wallet_id) do update
       set url = excluded.url, headers = excluded.headers, format = excluded.format,
           template = excluded.template, options = excluded.options, email = excluded.email,
           updated = excluded.updated;
    return echovalue._finish(v_caller, v_paid, 200, 'OK');
end;
$$;
